package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/fastpath-net/fastpath/internal/agenttest"
	"github.com/fastpath-net/fastpath/internal/ctl"
	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/identity/identitytest"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testenv"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

const (
	saNamespace = "kube-system"
	saName      = "fastpath-agent"
	nodeName    = "fp-deploy-node"
	appNS       = "fp-deploy"
)

// TestAgentRunsUnderItsRBAC applies deploy/agent's ServiceAccount and RBAC
// for real, gets a token bound to that ServiceAccount (TokenRequest, as the
// kubelet mounts it in the pod), and runs the real agent with only that
// token: it must program a Service that a client then reaches through its
// ClusterIP, report a frontend conflict as an Event, and log no
// "forbidden". SelfSubjectAccessReviews under the same token check each
// rule, and that the role grants nothing beyond what the agent calls.
func TestAgentRunsUnderItsRBAC(t *testing.T) {
	testpriv.Require(t)
	env := testenv.StartForTest(t, testenv.Options{})
	applyFiles(t, newApplier(t, env), "agent/serviceaccount.yaml", "agent/rbac.yaml")
	admin := env.Clientset
	ctx := t.Context()
	kubeconfig := serviceAccountKubeconfig(t, env, saName)
	checkAccess(t, kubeconfig, agentAccess)

	// The node, its namespace of Services, a backend and a client.
	star, err := nettopo.NewStar("dep", "client", "be1")
	if err != nil {
		t.Fatal(err)
	}
	pinDir, err := os.MkdirTemp("/sys/fs/bpf", "fp-deploy-")
	if err != nil {
		testpriv.Unavailable(t, "cannot create a directory on bpffs: "+err.Error())
	}
	t.Cleanup(func() {
		for _, ifc := range star.NodeInterfaces() {
			_ = datapath.DetachTC(pinDir, datapath.Iface{NetNS: star.Node.Path(), Name: ifc})
		}
		if err := star.Close(); err != nil {
			t.Errorf("remove namespaces: %v", err)
		}
		if err := datapath.Uninstall(pinDir); err != nil {
			t.Errorf("remove pins: %v", err)
		}
	})
	be := star.Host("be1")
	w, err := nettopo.StartWhoami(be.NS, "be1", be.Addr.String()+":8080")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: star.Host("client").NodeIP.String()}}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: appNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// --enable-policy: its informers, identity allocation and GC run under
	// the same RBAC.
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	identitytest.InstallCRD(t, dyn)
	log := runAgent(t, kubeconfig, pinDir, star)
	svc := createService(t, admin, "web", nil)
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-1", Namespace: appNS, Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{be.Addr.String()}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
	if _, err := admin.DiscoveryV1().EndpointSlices(appNS).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Two Services asking for one externalIP frontend: the second gets a
	// Warning Event, which the agent may only send with events/create.
	createService(t, admin, "first", []string{"192.0.2.77"})
	createService(t, admin, "second", []string{"192.0.2.77"})

	waitFor(t, log, "the ClusterIP programmed in the pinned maps", func() bool {
		p, err := ctl.Open(pinDir)
		if err != nil {
			return false
		}
		defer p.Close()
		rows, err := ctl.Services(p.LB)
		if err != nil {
			return false
		}
		for _, r := range rows {
			if r.Frontend == svc.Spec.ClusterIP+":80/TCP" && len(r.Backends) == 1 {
				return true
			}
		}
		return false
	})
	if name, err := nettopo.AskTCP(star.Host("client").NS, svc.Spec.ClusterIP+":80", 3*time.Second); err != nil || name != "be1" {
		t.Errorf("client -> ClusterIP %s:80: %q, %v; want be1", svc.Spec.ClusterIP, name, err)
	}
	waitFor(t, log, "a FastpathFrontendConflict Event", func() bool {
		evs, err := admin.CoreV1().Events(appNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if e.Reason == "FastpathFrontendConflict" && e.Source.Component == "fastpath-agent" {
				return true
			}
		}
		return false
	})
	// A pod of this node: the agent allocates its identity.
	if _, err := admin.CoreV1().Pods(appNS).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-a", Namespace: appNS, Labels: map[string]string{"app": "a"}},
		Spec:       corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "a", Image: "a"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, log, "the pod's FastpathIdentity", func() bool {
		list, err := dyn.Resource(identity.GVR).List(ctx, metav1.ListOptions{})
		return err == nil && len(list.Items) > 0
	})
	if strings.Contains(strings.ToLower(log.String()), "forbidden") {
		t.Errorf("the agent was refused something under its RBAC:\n%s", log)
	}
}

func createService(t *testing.T, cs kubernetes.Interface, name string, externalIPs []string) *corev1.Service {
	t.Helper()
	svc, err := cs.CoreV1().Services(appNS).Create(t.Context(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: appNS},
		Spec: corev1.ServiceSpec{ExternalIPs: externalIPs, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// writeTokenKubeconfig writes a kubeconfig holding only the bearer token.
func writeTokenKubeconfig(t *testing.T, path string, env *testenv.Env, token string) {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["env"] = &clientcmdapi.Cluster{Server: env.Host, CertificateAuthorityData: env.CAData}
	cfg.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["sa"] = &clientcmdapi.Context{Cluster: "env", AuthInfo: "sa"}
	cfg.CurrentContext = "sa"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
}

// applyFiles applies (for real) every object in the files under deploy/.
func applyFiles(t *testing.T, a *applier, files ...string) {
	t.Helper()
	for _, file := range files {
		objs, err := readObjects(filepath.Join(deployDir, file))
		if err != nil {
			t.Fatal(err)
		}
		for _, obj := range objs {
			if err := a.apply(t, obj, false); err != nil {
				t.Fatalf("%s: apply %s %s: %v", file, obj.GetKind(), obj.GetName(), err)
			}
		}
	}
}

// serviceAccountKubeconfig writes a kubeconfig with a token bound to the
// ServiceAccount kube-system/name (TokenRequest, as the kubelet mounts it).
func serviceAccountKubeconfig(t *testing.T, env *testenv.Env, name string) string {
	t.Helper()
	tr, err := env.Clientset.CoreV1().ServiceAccounts(saNamespace).CreateToken(t.Context(), name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	writeTokenKubeconfig(t, path, env, tr.Status.Token)
	return path
}

// access is one SelfSubjectAccessReview and whether it must be allowed.
type access struct {
	attr authorizationv1.ResourceAttributes
	want bool
}

type ra = authorizationv1.ResourceAttributes

// agentAccess: every call the agent makes, and a sample of what it never does.
var agentAccess = []access{
	{ra{Resource: "services", Verb: "list"}, true},
	{ra{Resource: "services", Verb: "watch"}, true},
	{ra{Group: "discovery.k8s.io", Resource: "endpointslices", Verb: "list"}, true},
	{ra{Group: "discovery.k8s.io", Resource: "endpointslices", Verb: "watch"}, true},
	{ra{Resource: "nodes", Verb: "list"}, true},
	{ra{Resource: "nodes", Verb: "watch"}, true},
	{ra{Resource: "events", Verb: "create", Namespace: appNS}, true},
	{ra{Resource: "events", Verb: "patch", Namespace: appNS}, true},
	{ra{Resource: "services", Verb: "update", Namespace: appNS}, false},
	{ra{Resource: "services", Verb: "get", Namespace: appNS}, false},
	{ra{Resource: "services", Subresource: "status", Verb: "patch", Namespace: appNS}, false},
	{ra{Group: "discovery.k8s.io", Resource: "endpointslices", Verb: "delete", Namespace: appNS}, false},
	{ra{Resource: "nodes", Verb: "patch"}, false},
	{ra{Resource: "secrets", Verb: "list"}, false},
	{ra{Resource: "pods", Verb: "list"}, true},
	{ra{Resource: "pods", Verb: "watch"}, true},
	{ra{Resource: "namespaces", Verb: "list"}, true},
	{ra{Resource: "namespaces", Verb: "watch"}, true},
	{ra{Group: "networking.k8s.io", Resource: "networkpolicies", Verb: "list"}, true},
	{ra{Group: "networking.k8s.io", Resource: "networkpolicies", Verb: "watch"}, true},
	{ra{Group: "fastpath.io", Resource: "fastpathidentities", Verb: "create"}, true},
	{ra{Group: "fastpath.io", Resource: "fastpathidentities", Verb: "delete"}, true},
	{ra{Group: "fastpath.io", Resource: "fastpathidentities", Verb: "patch"}, true},
	{ra{Resource: "pods", Verb: "delete", Namespace: appNS}, false},
	{ra{Resource: "namespaces", Verb: "update"}, false},
	{ra{Group: "networking.k8s.io", Resource: "networkpolicies", Verb: "update", Namespace: appNS}, false},
	{ra{Resource: "configmaps", Verb: "get", Namespace: saNamespace}, false},
	{ra{Resource: "events", Verb: "delete", Namespace: appNS}, false},
	{ra{Group: "coordination.k8s.io", Resource: "leases", Verb: "get", Namespace: saNamespace}, true},
	{ra{Group: "coordination.k8s.io", Resource: "leases", Verb: "create", Namespace: saNamespace}, true},
	{ra{Group: "coordination.k8s.io", Resource: "leases", Verb: "update", Namespace: saNamespace}, true},
	{ra{Group: "coordination.k8s.io", Resource: "leases", Verb: "delete", Namespace: saNamespace}, false},
	{ra{Group: "coordination.k8s.io", Resource: "leases", Verb: "list", Namespace: saNamespace}, false},
	{ra{Group: "coordination.k8s.io", Resource: "leases", Verb: "get", Namespace: appNS}, false},
	// BGP is fastpath-bgp's (deploy/bgp): the agent reads neither the
	// peering policies nor the password Secrets.
	{ra{Group: "fastpath.io", Resource: "fastpathbgppeeringpolicies", Verb: "list"}, false},
	{ra{Resource: "secrets", Verb: "get", Namespace: saNamespace}, false},
	{ra{Resource: "secrets", Verb: "list", Namespace: saNamespace}, false},
	{ra{Resource: "secrets", Verb: "watch", Namespace: saNamespace}, false},
	{ra{Resource: "secrets", Verb: "get", Namespace: appNS}, false},
}

// checkAccess asks the apiserver what the kubeconfig's token may do.
func checkAccess(t *testing.T, kubeconfig string, rules []access) {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	for _, c := range rules {
		attr := c.attr
		r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(t.Context(),
			&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attr}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed != c.want {
			t.Errorf("%s %s %s/%s %s (ns %q): allowed=%v, want %v", attr.Verb, attr.Group, attr.Resource, attr.Subresource, attr.Name, attr.Namespace, r.Status.Allowed, c.want)
		}
	}
}

// agentLog is the agent's output file.
type agentLog string

func (l agentLog) String() string {
	b, err := os.ReadFile(string(l))
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// runAgent builds and starts the real agent in the root namespace, its
// datapath and listeners inside the node namespace, and stops it at the end.
func runAgent(t *testing.T, kubeconfig, pinDir string, star *nettopo.Star) agentLog {
	t.Helper()
	return runBinary(t, "fastpath-agent", "--kubeconfig", kubeconfig, "--node-name", nodeName,
		"--bpffs-dir", pinDir, "--netns", star.Node.Path(), "--interfaces", strings.Join(star.NodeInterfaces(), ","),
		"--ct-max", "4096", "--services-max", "4096", "--backends-max", "1024", "--revnat-max", "1024",
		"--sock-revnat-max", "1024", "--affinity-max", "1024", "--log-level", "debug", "--enable-policy")
}

// runBinary builds cmd/<name>, starts it with args and its output in a
// log file, and stops it (SIGTERM, then SIGKILL after 10s) at the end.
func runBinary(t *testing.T, name string, args ...string) agentLog {
	t.Helper()
	bin := agenttest.BuildCmd(t, name)
	log := agentLog(filepath.Join(t.TempDir(), name+".log"))
	out, err := os.Create(string(log))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close() // the child has its own copy
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		agenttest.Terminate(cmd, 10*time.Second)
		if t.Failed() {
			t.Logf("%s log:\n%s", name, log)
		}
	})
	return log
}

func waitFor(t *testing.T, log agentLog, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("%s: not within 20s\nagent log:\n%s", what, log)
}
