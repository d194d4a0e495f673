// Package cniapi is the versioned API between fastpath-cni (the plugin the
// container runtime executes) and the agent on the same node: one JSON
// request and one JSON response per call, over HTTP/1.1 on a unix socket.
//
// The agent serves it with net/http; the plugin speaks it with the few lines
// of client.go instead, because the plugin is started once per pod and every
// package it links costs start-up time on the pod's critical path.
//
// Paths carry the version (/v1/add ...). A change that old plugins cannot
// read gets /v2, served beside /v1 until no node runs the old plugin.
package cniapi

import "encoding/json"

// Paths of the v1 API, one per CNI verb the agent does work for. VERSION is
// answered by the plugin itself.
const (
	PathAdd    = "/v1/add"
	PathDel    = "/v1/del"
	PathCheck  = "/v1/check"
	PathGC     = "/v1/gc"
	PathStatus = "/v1/status"
)

// DefaultSocket is where the agent listens unless told otherwise.
const DefaultSocket = "/run/fastpath/cni.sock"

// Request is one CNI invocation as the runtime made it: the CNI_*
// environment and the network configuration from stdin.
type Request struct {
	ContainerID string `json:"containerID,omitempty"`
	NetNS       string `json:"netns,omitempty"`
	IfName      string `json:"ifName,omitempty"`
	// Args is CNI_ARGS (K8S_POD_NAMESPACE=...;K8S_POD_NAME=...).
	Args string `json:"args,omitempty"`
	// Network is the network's name ("name" of the conflist): leases and
	// endpoints belong to one network, so GC of another never touches them.
	Network string `json:"network"`
	// MTU of the pod interface from the plugin's configuration; 0: the
	// agent's default.
	MTU int `json:"mtu,omitempty"`
	// PrevResult is the CHECK's prevResult, in the current CNI version.
	PrevResult json.RawMessage `json:"prevResult,omitempty"`
	// Valid lists the attachments GC must keep (cni.dev/valid-attachments).
	Valid []Attachment `json:"valid,omitempty"`
}

// Attachment names one pod interface: the key of leases and endpoints.
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

// Response is the agent's answer. Exactly one of Result and Error is set on
// ADD; the other verbs return no result.
type Response struct {
	// Result is a CNI result in version CurrentVersion; the plugin converts
	// it to the version the runtime asked for.
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// CurrentVersion is the CNI version of the results the agent produces.
const CurrentVersion = "1.1.0"

// Error is a CNI error as the spec defines it: the plugin prints it as is.
type Error struct {
	Code    uint   `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details,omitempty"`
}

func (e *Error) Error() string {
	if e.Details == "" {
		return e.Msg
	}
	return e.Msg + ": " + e.Details
}

// Error codes. 1-99 are the spec's well-known codes (the same numbers as
// github.com/containernetworking/cni/pkg/types, repeated here so that the
// agent does not link the plugin library for a few integers); 100 and up
// are fastpath's own, as the spec allows for plugin-specific errors.
const (
	CodeIncompatibleVersion  uint = 1
	CodeUnsupportedField     uint = 2
	CodeUnknownContainer     uint = 3 // the netns of an ADD/CHECK does not exist
	CodeInvalidEnvironment   uint = 4
	CodeIOFailure            uint = 5
	CodeDecodingFailure      uint = 6
	CodeInvalidNetworkConfig uint = 7
	CodeTryAgainLater        uint = 11  // agent unreachable, or not ready yet
	CodePluginNotAvailable   uint = 50  // STATUS: ADD cannot succeed now
	CodeAlreadyAttached      uint = 101 // ADD for an attachment that exists
	CodeAddressesExhausted   uint = 102 // IPAM has no free address
	CodeCheckFailed          uint = 103 // CHECK found the pod's network not as ADD left it
	CodeInternal             uint = 999
)

// Errorf builds an Error.
func Errorf(code uint, msg string, details string) *Error {
	return &Error{Code: code, Msg: msg, Details: details}
}
