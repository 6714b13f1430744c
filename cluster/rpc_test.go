package cluster

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// TestFrameWriterSendsEveryFrameWhole: frames written at once by many
// goroutines, which go out together, each arrive whole and once.
func TestFrameWriterSendsEveryFrameWhole(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	w := newFrameWriter(a)
	const n = 64
	got := make(chan frame, n)
	go func() {
		br := bufio.NewReaderSize(b, rpcReadBuffer)
		for range n {
			f, err := readFrame(br, b)
			if err != nil {
				t.Error(err)
				return
			}
			got <- f
		}
	}()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := w.write(frame{id: uint64(i), kind: 1, payload: bytes.Repeat([]byte{byte(i)}, 100*i)}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for range n {
		select {
		case f := <-got:
			if seen[f.id] || f.kind != 1 || !bytes.Equal(f.payload, bytes.Repeat([]byte{byte(f.id)}, 100*int(f.id))) {
				t.Fatalf("frame %d: kind %d, %d bytes, seen before %v", f.id, f.kind, len(f.payload), seen[f.id])
			}
			seen[f.id] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("%d frames of %d arrived", len(seen), n)
		}
	}
}

// cutConn is a connection whose first write waits for release and whose
// later writes stop after limit bytes in all, with an error.
type cutConn struct {
	net.Conn
	release chan struct{}
	mu      sync.Mutex
	writes  int
	limit   int
	closed  bool
}

func (c *cutConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	first := c.writes == 1
	c.mu.Unlock()
	if first {
		<-c.release
		return len(p), nil
	}
	if len(p) > c.limit {
		return c.limit, errors.New("connection cut")
	}
	c.limit -= len(p)
	return len(p), nil
}

func (c *cutConn) SetWriteDeadline(time.Time) error { return nil }

func (c *cutConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}

// TestFrameWriterReportsWhatLeftWhole: of frames that went out together
// in a write cut short, those before the cut are sent (their answer may
// come: the other end may act on them) and the others are not, nor is
// any frame after; the connection is closed. A proposal reported not
// sent is made again, so one sent must never be reported so.
func TestFrameWriterReportsWhatLeftWhole(t *testing.T) {
	payload := bytes.Repeat([]byte("x"), 100)
	size := frameHeader + len(payload)
	c := &cutConn{release: make(chan struct{}), limit: size + size/2}
	w := newFrameWriter(c)
	results := make([]chan error, 4)
	for i := range results {
		results[i] = make(chan error, 1)
		go func() { results[i] <- w.write(frame{id: uint64(i), payload: payload}) }()
		// Queued in this order: the first frame is being written, the
		// others wait for the next write, in the order they came.
		want := max(i, 1) * size
		if i == 0 {
			want = 0
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			w.mu.Lock()
			queued, writing := len(w.queue), w.writing
			w.mu.Unlock()
			if queued == want && (i > 0 || writing) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("frame %d: %d bytes queued, want %d", i, queued, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	close(c.release)
	for i, want := range []bool{true, true, false, false} {
		select {
		case err := <-results[i]:
			if (err == nil) != want {
				t.Errorf("frame %d: %v, want sent %v", i, err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("frame %d: no result", i)
		}
	}
	if err := w.write(frame{id: 9, payload: payload}); err == nil {
		t.Error("a frame written after the cut is reported sent")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		t.Error("the connection was not closed")
	}
	if c.writes != 2 {
		t.Errorf("%d writes, want 2 (the first frame, then the other three together)", c.writes)
	}
}
