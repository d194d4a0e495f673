package lbmap

import "fmt"

// ServiceFlagNames pairs each service flag with the name fastpathctl and
// the golden files print, in display order.
var ServiceFlagNames = []struct {
	Bit  uint16
	Name string
}{
	{ServiceAffinity, "affinity"},
	{ServiceNodePort, "nodeport"},
	{ServiceExternalIP, "externalip"},
	{ServiceLoadBalancer, "loadbalancer"},
	{ServiceExtLocal, "ext-local"},
	{ServiceSourceRanges, "source-ranges"},
	{ServiceInternalTwin, "internal-twin"},
}

// FlagNames names the flags set in f; bits without a name come last, in hex.
func FlagNames(f uint16) []string {
	var out []string
	for _, n := range ServiceFlagNames {
		if f&n.Bit != 0 {
			out = append(out, n.Name)
			f &^= n.Bit
		}
	}
	if f != 0 {
		out = append(out, fmt.Sprintf("0x%x", f))
	}
	return out
}

// BackendStateNames index backend states (BackendActive...).
var BackendStateNames = []string{BackendActive: "active", BackendTerminating: "terminating", BackendQuarantined: "quarantined"}

// StateName names a backend state, or state-N for an unknown one.
func StateName(s uint8) string {
	if int(s) < len(BackendStateNames) {
		return BackendStateNames[s]
	}
	return fmt.Sprintf("state-%d", s)
}
