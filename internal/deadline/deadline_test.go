package deadline

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/internal/testenv/loopback"
)

func TestArm(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		a, _ := loopback.Pair(t)
		disarm, err := Arm(context.Background(), a, 50*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		defer disarm()
		if _, err := a.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read past the timeout: %v", err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		a, _ := loopback.Pair(t)
		ctx, cancel := context.WithCancel(context.Background())
		disarm, err := Arm(ctx, a, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		defer disarm()
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		if _, err := a.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > 10*time.Second {
			t.Errorf("read after cancel: %v after %v", err, time.Since(start))
		}
	})
	t.Run("a late cancellation does not reach the next exchange", func(t *testing.T) {
		a, b := loopback.Pair(t)
		for range 200 {
			ctx, cancel := context.WithCancel(context.Background())
			disarm, err := Arm(ctx, a, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			cancel() // racing the end of the exchange
			disarm()
			next, err := Arm(context.Background(), a, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Write([]byte{1}); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Read(make([]byte, 1)); err != nil {
				t.Fatalf("the next exchange failed: %v", err)
			}
			next()
		}
	})
}
