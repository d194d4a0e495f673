package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// retryAfter is how soon a state that could not be fully applied (a
// missing password Secret, a peer GoBGP refused) is tried again.
const retryAfter = 5 * time.Second

// Config configures a Controller.
type Config struct {
	Client   kubernetes.Interface
	Dynamic  dynamic.Interface
	NodeName string
	// NetNS is the node's network namespace (fastpath-bgp's --netns); the
	// speaker listens there on ListenPort.
	NetNS      string
	ListenPort int
	// SecretNamespace holds the password Secrets peers refer to.
	SecretNamespace string
	Log             *slog.Logger
}

// Controller keeps this node's speaker at the Desired state computed from
// the policies, this Node, Service labels and the announceable LoadBalancer
// IPs the Service source hands it (Update).
type Controller struct {
	cfg     Config
	speaker *Speaker
	kick    chan struct{}

	mu       sync.Mutex
	announce loadbalancer.Announceable
	// haveSource is set by the Service source's first (full) batch. Until
	// then nothing is advertised: a restarted speaker would otherwise send
	// End-of-RIB without the LoadBalancer IPs and end the routers'
	// graceful restart by withdrawing them.
	haveSource bool

	policyInf, nodeInf, svcInf cache.SharedIndexInformer
	policiesChanged            bool
}

// New returns a controller; Run starts it.
func New(cfg Config) *Controller {
	return &Controller{
		cfg: cfg, speaker: NewSpeaker(cfg.NetNS, cfg.ListenPort, cfg.Log),
		kick: make(chan struct{}, 1), announce: loadbalancer.Announceable{},
	}
}

// Update takes one batch of the Service source (internal/k8s); the first
// must be full.
func (c *Controller) Update(full bool, upserted []loadbalancer.Service, deleted []loadbalancer.ServiceName) {
	c.mu.Lock()
	c.announce.Apply(full, upserted, deleted)
	c.haveSource = c.haveSource || full
	c.mu.Unlock()
	c.trigger()
}

func (c *Controller) trigger() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run watches the policies, this Node and Service labels and syncs the
// speaker until ctx ends. It then returns with the sessions up: the
// process's exit closes them without a NOTIFICATION, so routers doing
// graceful restart keep this node's routes until the next fastpath-bgp
// re-advertises them.
func (c *Controller) Run(ctx context.Context) {
	pf := dynamicinformer.NewDynamicSharedInformerFactory(c.cfg.Dynamic, 0)
	c.policyInf = pf.ForResource(PolicyGVR).Informer()
	nf := informers.NewSharedInformerFactoryWithOptions(c.cfg.Client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", c.cfg.NodeName).String()
	}))
	c.nodeInf = nf.Core().V1().Nodes().Informer()
	sf := informers.NewSharedInformerFactory(c.cfg.Client, 0)
	c.svcInf = sf.Core().V1().Services().Informer()
	// Only labels are needed of a Service (the serviceSelector); the
	// Service source (Update) has the rest.
	_ = c.svcInf.SetTransform(func(obj any) (any, error) {
		if svc, ok := obj.(*corev1.Service); ok {
			return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace, Labels: svc.Labels, ResourceVersion: svc.ResourceVersion}}, nil
		}
		return obj, nil
	})
	onPolicy := func(any) {
		c.mu.Lock()
		c.policiesChanged = true
		c.mu.Unlock()
		c.trigger()
	}
	on := func(any) { c.trigger() }
	for inf, fn := range map[cache.SharedIndexInformer]func(any){c.policyInf: onPolicy, c.nodeInf: on, c.svcInf: on} {
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: fn, UpdateFunc: func(_, n any) { fn(n) }, DeleteFunc: fn}); err != nil {
			c.cfg.Log.Error("bgp: informer", "error", err)
			return
		}
	}
	pf.Start(ctx.Done())
	nf.Start(ctx.Done())
	sf.Start(ctx.Done())
	defer pf.Shutdown()
	defer nf.Shutdown()
	defer sf.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.policyInf.HasSynced, c.nodeInf.HasSynced, c.svcInf.HasSynced) {
		return
	}
	var policies []*Policy
	retry := time.NewTimer(0)
	<-retry.C
	c.mu.Lock()
	c.policiesChanged = true
	c.mu.Unlock()
	for {
		c.mu.Lock()
		reload := c.policiesChanged
		c.policiesChanged = false
		ready := c.haveSource
		c.mu.Unlock()
		if reload {
			policies = c.loadPolicies(ctx)
		}
		// Before the source's first batch nothing is synced; Update
		// kicks the loop when it arrives.
		if err := c.syncIf(ctx, ready, policies); err != nil {
			c.cfg.Log.Warn("bgp: not all of the desired state applies; retrying", "error", err, "in", retryAfter)
			retry.Reset(retryAfter)
			c.mu.Lock()
			c.policiesChanged = true // a Secret may appear
			c.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-retry.C:
		}
	}
}

// loadPolicies parses every policy and resolves its passwords; a bad
// policy is logged with its field and left out, a peer whose Secret cannot
// be read is left out, and the rest apply.
func (c *Controller) loadPolicies(ctx context.Context) []*Policy {
	var out []*Policy
	for _, obj := range c.policyInf.GetStore().List() {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		p, err := ParsePolicy(u)
		if err != nil {
			c.cfg.Log.Error("bgp: FastpathBGPPeeringPolicy ignored", "policy", u.GetName(), "error", err)
			continue
		}
		peers := p.Peers[:0]
		for i, peer := range p.Peers {
			if peer.PasswordSecret != "" {
				pw, err := c.password(ctx, peer.PasswordSecret, peer.PasswordKey)
				if err != nil {
					c.cfg.Log.Error("bgp: peer left out", "policy", p.Name, "field", fmt.Sprintf("spec.peers[%d].passwordSecretRef", i), "error", err)
					continue
				}
				peer.Password = pw
			}
			peers = append(peers, peer)
		}
		p.Peers = peers
		out = append(out, p)
	}
	return out
}

func (c *Controller) password(ctx context.Context, name, key string) (string, error) {
	s, err := c.cfg.Client.CoreV1().Secrets(c.cfg.SecretNamespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	v, ok := s.Data[key]
	if !ok || len(v) == 0 {
		return "", fmt.Errorf("secret %s/%s has no key %q", c.cfg.SecretNamespace, name, key)
	}
	return string(v), nil
}

func (c *Controller) syncIf(ctx context.Context, ready bool, policies []*Policy) error {
	if !ready {
		return nil
	}
	return c.sync(ctx, policies)
}

// sync computes the desired state and drives the speaker to it.
func (c *Controller) sync(ctx context.Context, policies []*Policy) error {
	node := c.node()
	c.mu.Lock()
	d, errs := Compute(policies, node, c.announce, c.serviceLabels)
	c.mu.Unlock()
	for _, err := range errs {
		c.cfg.Log.Error("bgp", "error", err)
	}
	return c.speaker.Sync(ctx, d)
}

func (c *Controller) node() Node {
	n := Node{Name: c.cfg.NodeName}
	obj, ok, _ := c.nodeInf.GetStore().GetByKey(c.cfg.NodeName)
	if !ok {
		return n
	}
	node := obj.(*corev1.Node)
	n.Labels = node.Labels
	for _, a := range node.Status.Addresses {
		if ip, err := netip.ParseAddr(a.Address); err == nil && a.Type == corev1.NodeInternalIP && ip.Is4() && !n.RouterID.IsValid() {
			n.RouterID = ip
		}
	}
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	for _, s := range cidrs {
		if p, err := netip.ParsePrefix(s); err == nil {
			n.PodCIDRs = append(n.PodCIDRs, p)
		}
	}
	return n
}

func (c *Controller) serviceLabels(name loadbalancer.ServiceName) map[string]string {
	obj, ok, _ := c.svcInf.GetStore().GetByKey(name.Namespace + "/" + name.Name)
	if !ok {
		return nil
	}
	return obj.(*corev1.Service).Labels
}

// Speaker is the controller's speaker, for tests.
func (c *Controller) Speaker() *Speaker { return c.speaker }
