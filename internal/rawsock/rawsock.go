// Package rawsock reads and writes TCP sockets with raw system calls,
// waiting in the runtime's network poller as net.Conn does.
//
// Why: ldapgate's connections (the relay's, the mirror's directory reads,
// the Axigen CLI) carry short requests and answers, a few system calls each
// and little else, and a Go system call that is not raw wakes the runtime's
// monitor thread (sysmon) whenever the process was idle, which a process
// waiting for the next request or answer nearly always is. Profiles of the
// relay benchmark put a third of the gateway's CPU time in those wake-ups
// and the context switches they cost; a byte pipe (io.Copy, splice) pays
// the same. The socket is non-blocking, so these calls never block the
// thread, and the monitor has nothing to take back from them. It still
// wakes for the process's timers and for every other system call, so its
// other duties (preempting long-running goroutines) are delayed by at most
// that, and only while the process does nothing else.
package rawsock

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// Conn is a TCP connection whose Read and Write are raw system calls; its
// other methods (Close, deadlines, addresses) are the connection's own.
//
// Reads are made by one goroutine at a time and writes by one goroutine at
// a time; a read and a write may overlap.
type Conn struct {
	net.Conn
	rc syscall.RawConn

	readFn, writeFn func(fd uintptr) bool
	rbuf, wbuf      []byte
	rn, wn          int
	rerr, werr      syscall.Errno
}

// Wrap returns a plain TCP connection as a *Conn; any other connection
// (TLS, a pipe) is returned as it is.
func Wrap(conn net.Conn) net.Conn {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return conn
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return conn
	}
	s := &Conn{Conn: conn, rc: rc}
	s.readFn, s.writeFn = s.read, s.write
	return s
}

func (s *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rbuf, s.rn, s.rerr = p, 0, 0
	err := s.rc.Read(s.readFn)
	s.rbuf = nil
	switch {
	case err != nil:
		return 0, err
	case s.rerr != 0:
		return 0, os.NewSyscallError("read", s.rerr)
	case s.rn == 0:
		return 0, io.EOF
	}
	return s.rn, nil
}

// read is one attempt; false means wait until the socket is readable.
func (s *Conn) read(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&s.rbuf[0])), uintptr(len(s.rbuf)))
		switch errno {
		case 0:
			s.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		s.rerr = errno
		return true
	}
}

func (s *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.wbuf, s.wn, s.werr = p, 0, 0
	err := s.rc.Write(s.writeFn)
	n := s.wn
	s.wbuf = nil
	switch {
	case err != nil:
		return n, err
	case s.werr != 0:
		return n, os.NewSyscallError("write", s.werr)
	}
	return n, nil
}

// write sends what is left; false means wait until the socket is writable.
func (s *Conn) write(fd uintptr) bool {
	for s.wn < len(s.wbuf) {
		rest := s.wbuf[s.wn:]
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		switch errno {
		case 0:
			s.wn += int(n)
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		s.werr = errno
		return true
	}
	return true
}
