package gateway

import (
	"context"
	"time"
)

// SessionInfo describes a client session to an Interceptor.
type SessionInfo struct {
	// ID numbers sessions within one Server.
	ID uint64
	// RemoteAddr is the client's address.
	RemoteAddr string
	// BoundDN is the DN of the session's last successful simple bind with a
	// password; empty for an anonymous session, and after a bind with a DN
	// and no password (an unauthenticated bind, RFC 4513 section 5.1.2),
	// whatever the directory answered.
	BoundDN string
	// SASLMechanism is set instead of BoundDN when the session authenticated
	// with SASL; the identity is then the directory's to know.
	SASLMechanism string
	// TLS reports whether the client connection is encrypted.
	TLS bool
	// Flush sends the requests the session relayed and still buffers (a
	// pipelining client's earlier ones wait to go with the next); nil
	// does nothing. An Interceptor that waits for the answer to an
	// earlier write calls it first, or the write it waits for may be one
	// that is not sent.
	Flush func()
}

// Interceptor sees every decoded write before it goes upstream, in the way
// a slapd overlay or httputil.ReverseProxy's Rewrite/ModifyResponse does:
// the relay knows nothing about accounts or Axigen, the interceptor nothing
// about sockets.
//
// Intercept runs on the session's reading goroutine, so a session's writes
// reach it in the order the client sent them. To refuse a request it returns
// a non-nil *Result: the client gets that result and the directory never
// sees the request. Otherwise the returned Completion, if not nil, is called
// with the upstream's answer before the client sees it.
type Interceptor interface {
	Intercept(ctx context.Context, s SessionInfo, req *WriteRequest) (Completion, *Result)
}

// Completion receives the outcome of an intercepted write. The gateway
// waits for the directory's final answer whatever the client does (it does
// not relay an Abandon or a Cancel of the write, and holds a bind, an unbind
// or the end of the session until the answer comes). When the upstream
// connection was lost, or stayed silent for the op timeout, before it
// answered, res.Unanswered is true: the write may or may not have been
// applied.
type Completion func(ctx context.Context, res Result)

// Observer hears about every finished operation, for metrics. It runs on
// the relay's hot path: it must be quick and must not block.
type Observer interface {
	// OperationDone reports an operation ("search", "bind", ...), its LDAP
	// result code and how long it took from request to final answer (zero
	// when the gateway answered at once).
	OperationDone(op string, resultCode int, elapsed time.Duration)
}
