// Package netproxy is a test rig that puts network faults between
// processes talking TCP on loopback: a Proxy forwards one listening
// address to a target, and a test cuts it, heals it, or blocks one sender
// in one direction; a Network holds one proxy in front of each node of a
// cluster and turns partitions (isolate a node, split into groups, cut one
// link, drop one way) into proxy rules.
//
// A partition here is a black hole, as a firewall's DROP is, not a reset:
// the bytes of a blocked direction are read and thrown away, connections
// stay open and their peers learn of the fault only by their own timeouts.
// New connections from a blocked sender are accepted and held unanswered.
// Healing closes every connection that lost bytes (what it still held in
// transit is stale), so the peers reconnect to a clean stream.
//
// Per-link rules need to know which process dialled an accepted
// connection; on loopback every sender has the address 127.0.0.1, so
// ProcessSource finds the socket's owner in /proc instead (Linux).
package netproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Dir is a direction of a proxied connection.
type Dir uint8

const (
	// ToTarget is what the dialling sender writes towards the target.
	ToTarget Dir = 1 << iota
	// FromTarget is what the target answers back to the sender.
	FromTarget
	// Both directions.
	Both = ToTarget | FromTarget
)

// AnySource is the rule key that matches every sender, known or not.
const AnySource = "*"

// Options configure a Proxy.
type Options struct {
	// Addr is where the proxy listens; "127.0.0.1:0" when empty.
	Addr string
	// Source names the sender of an accepted connection, for Block. Nil,
	// or an empty name: only AnySource rules apply to it.
	Source func(c net.Conn) string
	// DialTimeout bounds the dial of the target (2s when 0).
	DialTimeout time.Duration
	// Delay holds what a sender writes for this long before passing it on
	// to the target, in order (a slow link): a race between what crosses
	// this link and what does not is made wide.
	Delay time.Duration
}

// Proxy forwards every connection accepted on its address to its target,
// unless a rule blocks the sender. Its methods are safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	target string
	opts   Options

	mu     sync.Mutex
	rules  map[string]Dir // sender -> blocked directions
	conns  map[*link]struct{}
	closed bool
	wg     sync.WaitGroup

	stats Stats
}

// Stats count what a proxy did.
type Stats struct {
	Accepted  int // connections accepted
	Forwarded int // of them, dialled through to the target
	Held      int // accepted from a blocked sender and held unanswered
	Dropped   int64
}

// link is one accepted connection and, once dialled, its target side.
type link struct {
	src    string
	client net.Conn
	// lossy: bytes were thrown away (or the connection was held), so a
	// heal must close it.
	lossy bool

	mu       sync.Mutex
	upstream net.Conn // nil while held
	closed   bool
}

// Listen starts a proxy to target.
func Listen(target string, opts Options) (*Proxy, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 2 * time.Second
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("netproxy: listen %s: %w", opts.Addr, err)
	}
	p := &Proxy{ln: ln, target: target, opts: opts, rules: map[string]Dir{}, conns: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listening address (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.target
}

// SetTarget makes the proxy forward the connections it accepts from now on
// to addr (a node restarted on another port: the others still name it by
// the proxy's address).
func (p *Proxy) SetTarget(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = addr
}

// Stats returns the counts so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Cut blocks every sender both ways: the node behind the proxy is
// unreachable.
func (p *Proxy) Cut() { p.Block(AnySource, Both) }

// Block throws away what sender src sends (ToTarget), what it is answered
// (FromTarget), or both, from now on, adding to the directions already
// blocked. src AnySource blocks every sender.
func (p *Proxy) Block(src string, d Dir) {
	p.mu.Lock()
	p.rules[src] |= d
	p.mu.Unlock()
}

// Heal removes every rule and closes the connections that lost bytes.
func (p *Proxy) Heal() {
	p.mu.Lock()
	clear(p.rules)
	var stale []*link
	for l := range p.conns {
		if l.lossy {
			stale = append(stale, l)
		}
	}
	p.mu.Unlock()
	for _, l := range stale {
		l.close()
	}
}

// Unblock removes sender src's rule (AnySource's stays unless src is
// AnySource) and closes its connections that lost bytes.
func (p *Proxy) Unblock(src string) {
	p.mu.Lock()
	delete(p.rules, src)
	var stale []*link
	for l := range p.conns {
		if l.lossy && (src == AnySource || l.src == src) && p.blockedLocked(l.src) == 0 {
			stale = append(stale, l)
		}
	}
	p.mu.Unlock()
	for _, l := range stale {
		l.close()
	}
}

// Reset closes every connection at once (as a restart of the network
// would); rules stay.
func (p *Proxy) Reset() {
	p.mu.Lock()
	all := make([]*link, 0, len(p.conns))
	for l := range p.conns {
		all = append(all, l)
	}
	p.mu.Unlock()
	for _, l := range all {
		l.close()
	}
}

// Close stops listening, closes every connection and waits for the
// proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.Reset()
	p.wg.Wait()
	return err
}

// blockedLocked is what is blocked for a sender.
func (p *Proxy) blockedLocked(src string) Dir {
	d := p.rules[AnySource]
	if src != "" {
		d |= p.rules[src]
	}
	return d
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		src := ""
		if p.opts.Source != nil {
			src = p.opts.Source(c)
		}
		l := &link{src: src, client: c}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.stats.Accepted++
		p.conns[l] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(l)
	}
}

func (l *link) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	l.client.Close()
	if l.upstream != nil {
		l.upstream.Close()
	}
}

// attach records the target side; false when the link was closed
// meanwhile (up is closed then).
func (l *link) attach(up net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		up.Close()
		return false
	}
	l.upstream = up
	return true
}

// serve holds the connection while its sender is blocked either way, then
// dials the target and copies both ways.
func (p *Proxy) serve(l *link) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.conns, l)
		p.mu.Unlock()
		l.close()
	}()
	// A sender blocked in any direction gets no new connection: a
	// handshake needs both.
	p.mu.Lock()
	if p.blockedLocked(l.src) != 0 {
		l.lossy = true
		p.stats.Held++
		p.mu.Unlock()
		// Held until the client gives up or a heal closes it.
		_, _ = io.Copy(io.Discard, l.client)
		return
	}
	p.mu.Unlock()
	up, err := net.DialTimeout("tcp", p.Target(), p.opts.DialTimeout)
	if err != nil {
		return // the target is down: the sender sees the connection close
	}
	if !l.attach(up) {
		return
	}
	p.mu.Lock()
	p.stats.Forwarded++
	p.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.copy(l, up, l.client, ToTarget)
	}()
	p.copy(l, l.client, up, FromTarget)
	l.close()
	<-done
}

// copy moves bytes from src to dst, throwing away what arrives while d is
// blocked for the link's sender. It ends when either side closes.
func (p *Proxy) copy(l *link, dst, src net.Conn, d Dir) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			blocked := p.blockedLocked(l.src)&d != 0
			if blocked {
				l.lossy = true
				p.stats.Dropped += int64(n)
			}
			p.mu.Unlock()
			if !blocked {
				if d == ToTarget && p.opts.Delay > 0 {
					time.Sleep(p.opts.Delay)
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					l.close()
					return
				}
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				l.close()
				return
			}
			// Half close: pass the end on, keep the other direction.
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			} else {
				l.close()
			}
			return
		}
	}
}
