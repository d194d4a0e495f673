package k8s

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ErrNotInCluster is returned by RESTConfig without a kubeconfig outside a
// pod.
var ErrNotInCluster = errors.New("no kubeconfig given and not running in a pod (KUBERNETES_SERVICE_HOST is not set)")

// InCluster reports whether the process runs in a pod: the kubelet sets
// KUBERNETES_SERVICE_HOST in every container.
func InCluster() bool { return os.Getenv("KUBERNETES_SERVICE_HOST") != "" }

// RESTConfig reads the kubeconfig file, or the pod's service-account
// configuration when kubeconfig is empty. It does not contact the apiserver.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	switch {
	case kubeconfig != "":
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	case InCluster():
		cfg, err = rest.InClusterConfig()
	default:
		return nil, ErrNotInCluster
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	cfg.UserAgent = "fastpath-agent"
	// Protobuf, as kube-proxy asks for: lists of thousands of Services and
	// EndpointSlices decode several times faster than JSON.
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	return cfg, nil
}

// NewClient returns a clientset for RESTConfig(kubeconfig).
func NewClient(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := RESTConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// DefaultNodeName is the node name kube-proxy assumes without
// --hostname-override: the host name, lower-cased.
func DefaultNodeName() (string, error) {
	h, err := os.Hostname()
	if err != nil {
		return "", err
	}
	return strings.ToLower(strings.TrimSpace(h)), nil
}

// NewDynamicClient returns a dynamic client for RESTConfig(kubeconfig),
// speaking JSON: CRDs (fastpath.io objects) have no protobuf.
func NewDynamicClient(kubeconfig string) (dynamic.Interface, error) {
	cfg, err := RESTConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg = rest.CopyConfig(cfg)
	cfg.ContentType, cfg.AcceptContentTypes = "application/json", "application/json"
	return dynamic.NewForConfig(cfg)
}
