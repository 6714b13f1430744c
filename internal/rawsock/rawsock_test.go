package rawsock

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/internal/testenv/loopback"
)

// TestCarriesLargeWritesBothWays writes more than the socket
// buffers hold, so writes wait for the reader and resume where they stopped,
// while the other direction carries data at the same time.
func TestCarriesLargeWritesBothWays(t *testing.T) {
	a, b := loopback.Pair(t)
	ra, rb := Wrap(a), Wrap(b)
	if _, ok := ra.(*Conn); !ok {
		t.Fatalf("a TCP connection is wrapped as %T", ra)
	}
	payload := make([]byte, 8<<20)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 2)
	go func() {
		_, err := ra.Write(payload)
		errc <- err
	}()
	go func() {
		_, err := rb.Write(payload[:1<<20])
		errc <- err
	}()
	gotB := make([]byte, len(payload))
	if _, err := io.ReadFull(rb, gotB); err != nil {
		t.Fatalf("read at b: %v", err)
	}
	gotA := make([]byte, 1<<20)
	if _, err := io.ReadFull(ra, gotA); err != nil {
		t.Fatalf("read at a: %v", err)
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	if !bytes.Equal(gotB, payload) || !bytes.Equal(gotA, payload[:1<<20]) {
		t.Fatal("data differs from what was written")
	}
}

func TestEnds(t *testing.T) {
	t.Run("EOF when the peer closes", func(t *testing.T) {
		a, b := loopback.Pair(t)
		r := Wrap(b)
		if _, err := a.Write([]byte("last")); err != nil {
			t.Fatal(err)
		}
		a.Close()
		got, err := io.ReadAll(r)
		if err != nil || string(got) != "last" {
			t.Fatalf("ReadAll = %q, %v; want \"last\", nil", got, err)
		}
	})
	t.Run("read deadline", func(t *testing.T) {
		_, b := loopback.Pair(t)
		r := Wrap(b)
		_ = b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := r.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read past the deadline = %v, want os.ErrDeadlineExceeded", err)
		}
	})
	t.Run("close during a read", func(t *testing.T) {
		_, b := loopback.Pair(t)
		r := Wrap(b)
		errc := make(chan error, 1)
		go func() {
			_, err := r.Read(make([]byte, 10))
			errc <- err
		}()
		// The read may start before or after the close: either way it ends
		// with net.ErrClosed.
		b.Close()
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Read on a closed connection = %v, want net.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Read did not end when the connection closed")
		}
	})
	t.Run("write after the peer reset", func(t *testing.T) {
		a, b := loopback.Pair(t)
		w := Wrap(b)
		_ = a.SetLinger(0)
		a.Close()
		buf := make([]byte, 64<<10)
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := w.Write(buf); err != nil {
				break // EPIPE or ECONNRESET, and no signal kills the test
			}
			if time.Now().After(deadline) {
				t.Fatal("writes to a reset connection kept succeeding")
			}
		}
	})
}

func TestLeavesOtherConnectionsAlone(t *testing.T) {
	a, _ := loopback.Pair(t)
	tc := tls.Client(a, &tls.Config{})
	if got := Wrap(tc); got != net.Conn(tc) {
		t.Fatalf("a TLS connection is wrapped as %T", got)
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if got := Wrap(p1); got != p1 {
		t.Fatalf("a pipe is wrapped as %T", got)
	}
}
