// Package proctail serves the child processes of the test servers (slapd,
// Samba) that integration starts: it keeps the tail of their output for
// error reports, forwarding each line to a logger as it comes, and stops
// them.
package proctail

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
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

// PID is the process id of cmd while it runs (exited, closed once it has
// been reaped, still open), else 0.
func PID(cmd *exec.Cmd, exited chan struct{}) int {
	if cmd == nil || cmd.Process == nil || Closed(exited) {
		return 0
	}
	return cmd.Process.Pid
}

// Halt sends sig to cmd and waits until it has exited, killing it after
// grace: a server finishing its work on SIGTERM must not hold a test up
// for ever. A process that is not running is left alone. name labels the
// error.
func Halt(name string, cmd *exec.Cmd, exited chan struct{}, sig syscall.Signal, grace time.Duration) error {
	if cmd == nil || Closed(exited) {
		return nil
	}
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s: signal %v: %w", name, sig, err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(grace):
	}
	_ = cmd.Process.Kill()
	<-exited
	return nil
}
