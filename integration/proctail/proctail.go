// Package proctail keeps the tail of a child process's output, for the
// error reports of the test servers (slapd, Samba) that integration starts,
// and forwards each line to a logger as it comes.
package proctail

import (
	"log/slog"
	"strings"
	"sync"
)

// Buffer keeps the last Max bytes written and logs each line at debug
// level under Name. It is an io.Writer safe for concurrent use.
type Buffer struct {
	mu     sync.Mutex
	buf    []byte
	max    int
	name   string
	logger *slog.Logger
}

// New returns a Buffer keeping max bytes; logger may be nil.
func New(max int, name string, logger *slog.Logger) *Buffer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Buffer{max: max, name: name, logger: logger}
}

// Write keeps p's bytes (the newest max of them) and logs its lines.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.max:]...)
	}
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		b.logger.Debug(b.name, "line", line)
	}
	return len(p), nil
}

// String returns what is kept.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// Closed reports whether c is closed (a nil channel counts as closed: the
// process it stands for never started).
func Closed(c chan struct{}) bool {
	if c == nil {
		return true
	}
	select {
	case <-c:
		return true
	default:
		return false
	}
}
