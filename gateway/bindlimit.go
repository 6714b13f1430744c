package gateway

import (
	"context"
	"net"
	"sync"
	"time"
)

// bindLimiter slows password guessing: a client address with too many
// failed binds within the window is refused further binds until the window
// passes, without the directory seeing them.
type bindLimiter struct {
	max    int
	window time.Duration

	mu    sync.Mutex
	fails map[string]*bindFailures
}

type bindFailures struct {
	count int // failed binds of the window, and binds awaiting their answer
	since time.Time
	// pending is how many of count await their answer; wake is closed (and
	// replaced) when one of them gets it, for the binds waiting for room.
	pending int
	wake    chan struct{}
}

// maxBindWait bounds how long a bind waits for room among the binds of its
// address still awaiting their answers; then it is answered busy.
const maxBindWait = 10 * time.Second

// maxTrackedAddresses bounds the limiter's memory under a spray of addresses.
const maxTrackedAddresses = 100_000

func newBindLimiter(max int, window time.Duration) *bindLimiter {
	return &bindLimiter{max: max, window: window, fails: make(map[string]*bindFailures)}
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// clientOf is who the per-client limits (failed binds, connections per
// address) count for a client address: the IP address, or for IPv6 its
// /64 network. One IPv6 host commonly holds a whole /64 and may pick a
// fresh address for each connection; counted per address, its guesses and
// connections would never reach a limit, and enough fresh addresses would
// also flush the limiter's table of everyone's failures.
func clientOf(addr string) string {
	host := hostOf(addr)
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String() // an IPv4-mapped IPv6 address too
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// bindTicket is a bind admitted by the limiter and counted, until its
// answer comes, as a failure of its address's window. The zero ticket
// stands for a bind nothing was counted for.
type bindTicket struct {
	f *bindFailures
}

// admitWait decides whether a bind from addr may go to the directory and,
// if so, counts it as a failure at once, so that binds sent together (on
// many connections at the same moment) cannot all pass the check before
// the first answer arrives: the limit bounds the guesses the directory
// sees, answered or not. settle gives the count back unless the bind
// failed. Refused, it reports how long to wait. A bind held back only by
// binds of its address still awaiting their answers waits for them, at
// most maxBindWait, rather than being refused. A busy client (a mail
// server authenticating its users on many connections) may have more binds
// in flight than the limit of failures; refusing them would lock out its
// users for no failure at all, while letting them all through would let
// guesses sent together pass the limit. busy says the wait ran out.
func (l *bindLimiter) admitWait(ctx context.Context, addr string) (t bindTicket, ok, busy bool, wait time.Duration) {
	var timer *time.Timer
	for {
		t, ok, wait, wake := l.try(addr, time.Now())
		if ok || wake == nil {
			return t, ok, false, wait
		}
		if timer == nil {
			timer = time.NewTimer(maxBindWait)
			defer timer.Stop()
		}
		select {
		case <-wake:
		case <-timer.C:
			return bindTicket{}, false, true, 0
		case <-ctx.Done():
			return bindTicket{}, false, true, 0
		}
	}
}

// try is admitWait's decision at now, without waiting: when the bind is
// held back only by binds awaiting their answers, it returns a channel
// closed when one of them gets it.
func (l *bindLimiter) try(addr string, now time.Time) (bindTicket, bool, time.Duration, <-chan struct{}) {
	if l == nil || l.max <= 0 {
		return bindTicket{}, true, 0, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	host := clientOf(addr)
	f := l.fails[host]
	if f == nil || now.Sub(f.since) >= l.window {
		if len(l.fails) >= maxTrackedAddresses {
			l.pruneLocked(now)
		}
		f = &bindFailures{since: now}
		l.fails[host] = f
	}
	if f.count >= l.max {
		if failed := f.count - f.pending; failed < l.max && f.pending > 0 {
			if f.wake == nil {
				f.wake = make(chan struct{})
			}
			return bindTicket{}, false, 0, f.wake
		}
		return bindTicket{}, false, l.window - now.Sub(f.since), nil
	}
	f.count++
	f.pending++
	return bindTicket{f: f}, true, 0, nil
}

// settle records the answer to an admitted bind: a failure stays counted,
// anything else is given back. A window that has passed meanwhile no
// longer counts (its entry is replaced), whatever settle does to it.
func (l *bindLimiter) settle(t bindTicket, failed bool) {
	if l == nil || t.f == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	f := t.f
	if f.pending > 0 {
		f.pending--
		if !failed && f.count > 0 {
			f.count--
		}
	}
	if f.wake != nil {
		close(f.wake)
		f.wake = nil
	}
}

func (l *bindLimiter) pruneLocked(now time.Time) {
	for h, f := range l.fails {
		if now.Sub(f.since) >= l.window {
			delete(l.fails, h)
		}
	}
	if len(l.fails) >= maxTrackedAddresses {
		// Still full of live entries: forget them all rather than grow.
		clear(l.fails)
	}
}
