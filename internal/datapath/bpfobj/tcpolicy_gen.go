package bpfobj

// tc_policy has a file of its own so its generate line does not collide
// with changes to gen.go.
//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror -I../../../bpf/include -I/usr/include/x86_64-linux-gnu" -target bpfel -go-package bpfobj Tcpolicy ../../../bpf/tc_policy.c
