// Package deadline bounds one exchange on a connection by a timeout and by
// a context, so that a blocked read or write ends when either does.
package deadline

import (
	"context"
	"net"
	"time"
)

// Arm sets conn's deadline to timeout from now, or to ctx's deadline if
// that is sooner, and makes a cancellation of ctx end a blocked read or
// write at once. The returned disarm must be called when the exchange is
// over, before the connection is used again: it waits for a cancellation
// already under way, so that its past deadline cannot land on the next
// exchange.
func Arm(ctx context.Context, conn net.Conn, timeout time.Duration) (disarm func(), err error) {
	d := time.Now().Add(timeout)
	if cd, ok := ctx.Deadline(); ok && cd.Before(d) {
		d = cd
	}
	if err := conn.SetDeadline(d); err != nil {
		return func() {}, err
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		_ = conn.SetDeadline(time.Unix(1, 0))
	})
	return func() {
		if !stop() {
			<-fired
		}
	}, nil
}
