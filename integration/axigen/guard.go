package axigen

import (
	"context"
	"errors"
)

// ErrGuard is wrapped by the error of commands not sent because the
// context's guard (WithGuard) refused them.
var ErrGuard = errors.New("not sent: the guard refused")

type guardKey struct{}

// WithGuard returns a context whose commands are sent only after guard
// allowed them, checked before each round trip (each write to the
// server). A cluster's leader guards its deliveries with its leadership,
// so that a leader deposed while it was frozen mid-delivery does not send
// the rest of that delivery when it wakes.
func WithGuard(ctx context.Context, guard func(context.Context) error) context.Context {
	return context.WithValue(ctx, guardKey{}, guard)
}

func guardOf(ctx context.Context) func(context.Context) error {
	g, _ := ctx.Value(guardKey{}).(func(context.Context) error)
	return g
}
