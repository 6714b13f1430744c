package cluster

import (
	"context"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// TCPStream is the plain TCP stream layer over ln: Raft's traffic
// unencrypted, for loopback and tests. Mutual TLS is another StreamLayer
// (a tls listener, a tls dialer) given to Config.Stream.
func TCPStream(ln net.Listener) raft.StreamLayer { return tcpStream{ln} }

type tcpStream struct{ net.Listener }

func (tcpStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

// raftLogger passes hashicorp/raft's messages to slog.
func raftLogger(log *slog.Logger) hclog.Logger {
	l := hclog.NewInterceptLogger(&hclog.LoggerOptions{Name: "raft", Level: hclog.Info, Output: io.Discard})
	l.RegisterSink(slogSink{log})
	return l
}

type slogSink struct{ log *slog.Logger }

func (s slogSink) Accept(name string, level hclog.Level, msg string, args ...any) {
	l := slog.LevelDebug
	switch {
	case level >= hclog.Error:
		l = slog.LevelError
	case level == hclog.Warn:
		l = slog.LevelWarn
	case level == hclog.Info:
		l = slog.LevelInfo
	}
	s.log.Log(context.Background(), l, msg, append(args, "logger", name)...)
}
