package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"syscall"
)

// handoff connects to meshid's socket, so that meshid attests this
// process, and passes the connection to the process listening on -to
// (SCM_RIGHTS), as a workload could to any other. It then waits until that
// process closes the control connection and exits: whoever holds
// meshid's connection afterwards is not the process meshid attested.
func handoff(_ context.Context, args []string, _ io.Writer) (Result, error) {
	var socket, to string
	flags("handoff", args, func(fs *flag.FlagSet) {
		fs.StringVar(&socket, "socket", "", "meshid's socket")
		fs.StringVar(&to, "to", "", "Unix socket of the process to pass the connection to")
	})
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()
	ctl, err := net.Dial("unix", to)
	if err != nil {
		return Result{}, err
	}
	defer ctl.Close()
	f, err := conn.(*net.UnixConn).File()
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	if _, _, err := ctl.(*net.UnixConn).WriteMsgUnix([]byte("fd"), syscall.UnixRights(int(f.Fd())), nil); err != nil {
		return Result{}, fmt.Errorf("pass the connection: %w", err)
	}
	if _, err := io.Copy(io.Discard, ctl); err != nil && !errors.Is(err, net.ErrClosed) {
		return Result{}, err
	}
	return Result{Ops: 1}, nil
}
