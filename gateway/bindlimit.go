package gateway

import (
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
	count int
	since time.Time
}

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
// answer comes, as a failure of its address's window (since). The zero
// ticket stands for a bind nothing was counted for.
type bindTicket struct {
	host  string
	since time.Time
}

// admit decides whether a bind from addr may go to the directory now and,
// if so, counts it as a failure at once, so that binds sent together (on
// many connections at the same moment) cannot all pass the check before
// the first answer arrives: the limit bounds the guesses the directory
// sees, answered or not. settle gives the count back unless the bind
// failed. A bind whose answer never comes (its connection lost) stays
// counted until its window passes. Refused, it reports how long to wait.
func (l *bindLimiter) admit(addr string, now time.Time) (bindTicket, bool, time.Duration) {
	if l == nil || l.max <= 0 {
		return bindTicket{}, true, 0
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
		return bindTicket{}, false, l.window - now.Sub(f.since)
	}
	f.count++
	return bindTicket{host: host, since: f.since}, true, 0
}

// settle records the answer to an admitted bind: a failure stays counted,
// anything else is given back (unless its window has passed meanwhile).
func (l *bindLimiter) settle(t bindTicket, failed bool) {
	if l == nil || t.host == "" || failed {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.fails[t.host]; f != nil && f.since.Equal(t.since) && f.count > 0 {
		f.count--
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
