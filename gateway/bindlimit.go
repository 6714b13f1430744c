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

// blocked reports whether binds from addr are refused now, and until when.
func (l *bindLimiter) blocked(addr string, now time.Time) (bool, time.Duration) {
	if l == nil || l.max <= 0 {
		return false, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.fails[hostOf(addr)]
	if f == nil || now.Sub(f.since) >= l.window {
		return false, 0
	}
	if f.count >= l.max {
		return true, l.window - now.Sub(f.since)
	}
	return false, 0
}

// failed records a failed bind from addr.
func (l *bindLimiter) failed(addr string, now time.Time) {
	if l == nil || l.max <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	host := hostOf(addr)
	f := l.fails[host]
	if f == nil || now.Sub(f.since) >= l.window {
		if len(l.fails) >= maxTrackedAddresses {
			l.pruneLocked(now)
		}
		f = &bindFailures{since: now}
		l.fails[host] = f
	}
	f.count++
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
