package axigen

import (
	"errors"
	"fmt"
	"strings"
)

// Kind classifies an Error.
type Kind int

const (
	// KindServer: the server answered "-ERR". Its texts are not documented,
	// so the client never reads meaning into them; sending the same command
	// again gets the same answer, so it is not temporary. (A caller may still
	// retry a whole Apply a bounded number of times: Apply re-reads state.)
	KindServer Kind = iota + 1
	// KindTimeout: no answer within the command or dial timeout.
	KindTimeout
	// KindConnection: refused, reset or closed connection.
	KindConnection
	// KindAuth: the server refused the administrator's credentials.
	KindAuth
	// KindProtocol: the server said something this client cannot follow
	// (unexpected prompt or context, malformed SHOW or LIST).
	KindProtocol
	// KindUnsafeValue: a value cannot be sent safely (line break, NUL,
	// control character, invalid UTF-8, empty name). Nothing was sent.
	KindUnsafeValue
	// KindConflict: Axigen's state contradicts the desired state in a way
	// the client must not resolve alone (an account of another directory
	// entry holds the name).
	KindConflict
	// KindCanceled: the caller's context was canceled.
	KindCanceled
)

func (k Kind) String() string {
	switch k {
	case KindServer:
		return "server error"
	case KindTimeout:
		return "timeout"
	case KindConnection:
		return "connection error"
	case KindAuth:
		return "authentication failed"
	case KindProtocol:
		return "protocol error"
	case KindUnsafeValue:
		return "unsafe value"
	case KindConflict:
		return "conflict"
	case KindCanceled:
		return "canceled"
	}
	return "error"
}

// ErrUnsafeValue is wrapped by every error about a value that cannot be
// sent safely.
var ErrUnsafeValue = errors.New("value cannot be sent safely to the Axigen CLI")

// Error is the error type of this package.
type Error struct {
	Kind Kind
	// Op is the operation, e.g. "apply account john@example.com".
	Op string
	// Cmd is the command being run, passwords masked ("" if none).
	Cmd string
	// Status is the server's status text for KindServer and KindAuth.
	Status string
	// Field names the offending value for KindUnsafeValue.
	Field string
	// Temporary reports whether trying again later can help: true for
	// timeouts and connection errors, false otherwise.
	Temporary bool
	// Err is the underlying cause, if any.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("axigen")
	if e.Op != "" {
		b.WriteString(": " + e.Op)
	}
	if e.Cmd != "" {
		b.WriteString(": " + e.Cmd)
	}
	b.WriteString(": " + e.Kind.String())
	if e.Field != "" {
		b.WriteString(" in " + e.Field)
	}
	if e.Status != "" {
		b.WriteString(": " + e.Status)
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// IsTemporary reports whether err is an Error that a later retry may cure.
func IsTemporary(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Temporary
}

// KindOf returns the Kind of err, or 0 when err is not an *Error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

// withOp returns err with op put before its Op when it is an *Error.
func withOp(err error, op string) error {
	var e *Error
	if errors.As(err, &e) {
		c := *e
		if c.Op == "" {
			c.Op = op
		} else if !strings.HasPrefix(c.Op, op) {
			c.Op = op + ": " + c.Op
		}
		return &c
	}
	return err
}

func unsafeValue(field, reason string) *Error {
	return &Error{Kind: KindUnsafeValue, Field: field, Err: fmt.Errorf("%s: %w", reason, ErrUnsafeValue)}
}

func errorf(format string, a ...any) error { return fmt.Errorf(format, a...) }
