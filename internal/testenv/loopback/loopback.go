// Package loopback gives tests both ends of a real TCP connection on the
// loopback interface: what socket-level code (raw I/O, peeks, deadlines)
// needs and net.Pipe cannot give.
package loopback

import (
	"net"
	"testing"
)

// Pair returns the dialling and the accepting end of a new loopback TCP
// connection, both closed when the test ends.
func Pair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		a.Close()
		t.Fatal("loopback accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}
