package axigen

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Pool holds up to Size logged-in sessions. Sessions are dialled on first
// use; one that breaks (dropped connection, timeout, protocol error) is
// closed and dialled again on its next use, so the pool recovers by itself
// once Axigen is reachable again.
type Pool struct {
	cfg   Config
	slots chan *Session // nil entries are free slots with no connection
	// domainHold is how long a session may stay in a domain's context
	// across operations (see domainParkHold).
	domainHold time.Duration

	mu     sync.Mutex
	closed bool
}

// NewPool returns a pool of size sessions (at least 1). It dials nothing yet.
func NewPool(cfg Config, size int) *Pool {
	if size < 1 {
		size = 1
	}
	p := &Pool{cfg: cfg, slots: make(chan *Session, size), domainHold: domainParkHold}
	for range size {
		p.slots <- nil
	}
	return p
}

// Size is the number of sessions the pool may hold.
func (p *Pool) Size() int { return cap(p.slots) }

var errPoolClosed = errors.New("pool closed")

// With runs fn with a logged-in session, waiting for a free one when all are
// busy. The session is at the root, or parked in the context of the domain
// it was last used in (see Session.enterDomain), so that the next operation
// on that domain need not enter it again. fn must leave the session at the
// root or in a domain's context; if it does not, or fails, With backs out
// of the contexts, discarding unsaved changes, or drops the session when
// that fails.
func (p *Pool) With(ctx context.Context, fn func(*Session) error) error {
	var s *Session
	select {
	case s = <-p.slots:
	case <-ctx.Done():
		return ioError(ctx, "wait for a session", "", ctx.Err())
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		if s != nil {
			s.Close()
		}
		p.slots <- nil
		return &Error{Kind: KindConnection, Err: errPoolClosed}
	}
	if s != nil && !s.Broken() && s.Context() == ctxDomain && time.Since(s.enteredDomain) > p.domainHold {
		// Bounded by its own timeout, like release's: a caller's context
		// already done must not cost a healthy session.
		uctx, cancel := context.WithTimeout(context.Background(), p.cfg.commandTimeout())
		s.unwind(uctx) // a failure breaks it: dropped below
		cancel()
	}
	if s != nil && s.Broken() {
		s.Close()
		s = nil
	}
	if s == nil {
		var err error
		s, err = Dial(ctx, p.cfg)
		if err != nil {
			p.slots <- nil
			return err
		}
	}
	err := fn(s)
	p.release(s, err == nil)
	return err
}

// release returns s to the pool, parked at the root or (after a success)
// in a domain's context, or drops it.
func (p *Pool) release(s *Session, ok bool) {
	if !s.Broken() && s.Context() != "" && !(ok && s.Context() == ctxDomain) {
		// Discard what the failed operation left unsaved. This runs even
		// if the caller's context is done, bounded by its own timeout.
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.commandTimeout())
		s.unwind(ctx)
		cancel()
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if s.Broken() || closed {
		s.Close()
		s = nil
	} else {
		s.unwatchContext() // the caller's context is done with it
	}
	p.slots <- s
}

// domainParkHold is how long after entering a domain's context a session
// is still used in it; after that it is backed out to the root and enters
// the domain afresh. docs/axigen-cli.md does not say whether a domain context
// sees what other sessions change meanwhile (an account another session
// created); this bounds how stale such a view could be.
const domainParkHold = time.Second

// Close closes the idle sessions and makes later With calls fail; sessions
// in use are closed when they are released.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	drained := 0
	for range cap(p.slots) {
		select {
		case s := <-p.slots:
			if s != nil {
				s.Close()
			}
			drained++
		default:
			// A session in use: release closes it.
		}
	}
	for range drained {
		p.slots <- nil
	}
	return nil
}

// unwind sends BACK until the session is at the root, discarding unsaved
// changes; a failure breaks the session.
func (s *Session) unwind(ctx context.Context) {
	for depth := 0; s.Context() != "" && !s.Broken(); depth++ {
		if depth > 8 {
			s.fail(&Error{Kind: KindProtocol, Err: errorf("cannot leave context %q", s.Context())})
			return
		}
		if _, err := s.Do(ctx, cmdBack); err != nil {
			s.fail(err)
			return
		}
	}
}
