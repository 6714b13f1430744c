package gateway

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// spareConns keeps upstream connections whose sessions ended cleanly, reset
// to anonymous, for the next sessions to use instead of dialling.
//
// Why: a client that opens a connection per operation (bind, search,
// unbind) makes the directory accept and tear down a connection for each,
// which costs it more than the bind and the search together. The gateway's
// side of a session needs no fresh upstream connection, only an anonymous
// one with nothing left over from its previous user, so one is handed on
// when a session ends (see session.park for what makes a connection clean,
// and for the anonymous bind that resets it). A connection still belongs
// to one session at a time, and the directory's ACLs still see that
// session's own identity.
type spareConns struct {
	max  int
	hold time.Duration

	mu      sync.Mutex
	conns   []spareConn // oldest first; taken from the end
	reset   map[net.Conn]struct{}
	reaper  *time.Timer
	closed  bool
	refused bool // the directory refused a reset: reuse is off
}

type spareConn struct {
	conn  net.Conn
	route string // the upstream connected to (RoutingDialer)
	since time.Time
}

// spareHold is how long a spare connection waits for a session before it
// is closed: long enough to carry a burst of connection-per-operation
// clients, short enough that the directory is not held open by the gateway
// after the clients are gone.
const spareHold = 2 * time.Second

func newSpareConns(max int, hold time.Duration) *spareConns {
	if max <= 0 {
		return nil
	}
	return &spareConns{max: max, hold: hold, reset: make(map[net.Conn]struct{})}
}

// resetting registers conn as being reset for reuse, so that close closes
// it too, and reports whether it may be: not when reuse is off.
func (p *spareConns) resetting(conn net.Conn) bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.refused {
		return false
	}
	p.reset[conn] = struct{}{}
	return true
}

// refuse turns reuse off; it reports whether it was on.
func (p *spareConns) refuse() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	was := !p.refused
	p.refused = true
	return was
}

// settle ends the reset of conn, connected to the upstream named route:
// a clean one is kept for a later session while there is room; any other
// is closed.
func (p *spareConns) settle(conn net.Conn, route string, clean bool) {
	p.mu.Lock()
	delete(p.reset, conn)
	if !clean || p.closed || p.refused || len(p.conns) >= p.max {
		p.mu.Unlock()
		conn.Close()
		return
	}
	p.conns = append(p.conns, spareConn{conn: conn, route: route, since: time.Now()})
	if p.reaper == nil {
		p.reaper = time.AfterFunc(p.hold, p.reap)
	}
	p.mu.Unlock()
}

// take returns the newest spare connection to the upstream named route
// that is still open with nothing unread, or nil. A connection to another
// upstream (the preferred one changed), or one the directory closed or
// sent something unasked on (a Notice of Disconnection), is closed and
// skipped.
func (p *spareConns) take(route string) net.Conn {
	if p == nil {
		return nil
	}
	for {
		p.mu.Lock()
		n := len(p.conns)
		if n == 0 {
			p.mu.Unlock()
			return nil
		}
		c := p.conns[n-1]
		p.conns[n-1] = spareConn{}
		p.conns = p.conns[:n-1]
		p.mu.Unlock()
		if c.route == route && quiet(c.conn) {
			return c.conn
		}
		c.conn.Close()
	}
}

// reap closes the connections that waited longer than the hold.
func (p *spareConns) reap() {
	p.mu.Lock()
	cutoff := time.Now().Add(-p.hold)
	n := 0
	for n < len(p.conns) && p.conns[n].since.Before(cutoff) {
		n++
	}
	old := make([]net.Conn, n)
	for i := range n {
		old[i] = p.conns[i].conn
	}
	p.conns = append(p.conns[:0], p.conns[n:]...)
	if len(p.conns) > 0 && !p.closed {
		p.reaper = time.AfterFunc(p.conns[0].since.Add(p.hold).Sub(time.Now()), p.reap)
	} else {
		p.reaper = nil
	}
	p.mu.Unlock()
	for _, c := range old {
		c.Close()
	}
}

// len reports how many spare connections are held.
func (p *spareConns) len() int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// close closes every spare connection, and those being reset, and keeps
// no more.
func (p *spareConns) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	for c := range p.reset {
		conns = append(conns, spareConn{conn: c})
	}
	clear(p.reset)
	p.conns = nil
	if p.reaper != nil {
		p.reaper.Stop()
		p.reaper = nil
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.conn.Close()
	}
}

// quiet reports whether conn is open with nothing waiting to be read,
// peeking at its socket without blocking. Connections it cannot inspect
// count as not quiet: they are not reused.
func quiet(conn net.Conn) bool {
	tc, isTLS := conn.(*tls.Conn)
	if isTLS {
		conn = tc.NetConn()
	}
	if !quietSocket(conn) {
		return false
	}
	if !isTLS {
		return true
	}
	// A record can wait in the TLS connection's own buffer, read from the
	// socket along with the reset's answer. A read with a deadline already
	// passed returns it, or times out without touching the socket (which
	// is empty); a timeout leaves a tls.Conn usable.
	if tc.SetReadDeadline(time.Unix(1, 0)) != nil {
		return false
	}
	var b [1]byte
	n, err := tc.Read(b[:])
	if n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	return tc.SetReadDeadline(time.Time{}) == nil
}

func quietSocket(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var b [1]byte
	ok = false
	err = rc.Control(func(fd uintptr) {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = errors.Is(err, syscall.EAGAIN)
	})
	return err == nil && ok
}
