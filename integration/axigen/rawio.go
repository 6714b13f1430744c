package axigen

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawConn reads and writes a plain TCP connection's socket with raw system
// calls, waiting in the runtime's network poller (and so under the
// connection's deadlines) as net.Conn does.
//
// Why: a CLI conversation is one short line out and one short answer back,
// ten or so times per delivery, and a Go system call that is not raw wakes
// the runtime's monitor thread (sysmon) when the process was idle, a
// wake-up and context switch that costs more than the call itself. The
// socket is non-blocking, so these calls never block the thread and the
// monitor has nothing to take back from them. (The gateway's relay does the
// same for its connections, for the same reason, and so do the mirror's
// directory reads, gateway/mirror/rawio.go.)
//
// A Session reads and writes from one goroutine at a time.
type rawConn struct {
	net.Conn
	rc syscall.RawConn

	readFn, writeFn func(fd uintptr) bool
	rbuf, wbuf      []byte
	rn, wn          int
	rerr, werr      syscall.Errno
}

// newRawConn wraps a plain TCP connection; any other (TLS) is returned as
// it is.
func newRawConn(conn net.Conn) net.Conn {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return conn
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return conn
	}
	c := &rawConn{Conn: conn, rc: rc}
	c.readFn, c.writeFn = c.read, c.write
	return c
}

func (c *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rbuf, c.rn, c.rerr = p, 0, 0
	err := c.rc.Read(c.readFn)
	c.rbuf = nil
	switch {
	case err != nil:
		return 0, err
	case c.rerr != 0:
		return 0, os.NewSyscallError("read", c.rerr)
	case c.rn == 0:
		return 0, io.EOF
	}
	return c.rn, nil
}

// read is one attempt; false means wait until the socket is readable.
func (c *rawConn) read(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch errno {
		case 0:
			c.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.rerr = errno
		return true
	}
}

func (c *rawConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wbuf, c.wn, c.werr = p, 0, 0
	err := c.rc.Write(c.writeFn)
	n := c.wn
	c.wbuf = nil
	switch {
	case err != nil:
		return n, err
	case c.werr != 0:
		return n, os.NewSyscallError("write", c.werr)
	}
	return n, nil
}

// write sends what is left; false means wait until the socket is writable.
func (c *rawConn) write(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		rest := c.wbuf[c.wn:]
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		switch errno {
		case 0:
			c.wn += int(n)
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.werr = errno
		return true
	}
	return true
}
