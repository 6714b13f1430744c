package axigen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/ldapgate/ldapgate/internal/rawsock"
)

// Config says how to reach and log in to an Axigen CLI listener.
type Config struct {
	// Addr is "host:port" (Axigen's default CLI port is 7000).
	Addr string
	// TLS, when set, makes the connection TLS (a listener with SSL enabled).
	TLS *tls.Config
	// User and Password are the administrator's credentials; use a
	// delegated administrator holding just the domain permissions needed.
	User     string
	Password string
	// DialTimeout bounds connecting, the banner and the login (10 s if 0).
	DialTimeout time.Duration
	// CommandTimeout bounds each command's answer (30 s if 0).
	CommandTimeout time.Duration
	// NoPipelining sends each command only once the answer to the one
	// before it has come, for a server that does not read commands sent
	// ahead of their turn (docs/axigen-cli.md, "Pipelining").
	NoPipelining bool
	// Logger gets one debug record per command, passwords masked.
	Logger *slog.Logger
}

func (c Config) dialTimeout() time.Duration {
	if c.DialTimeout > 0 {
		return c.DialTimeout
	}
	return 10 * time.Second
}

func (c Config) commandTimeout() time.Duration {
	if c.CommandTimeout > 0 {
		return c.CommandTimeout
	}
	return 30 * time.Second
}

// maxAnswer bounds one answer, so that a runaway server cannot exhaust memory.
const maxAnswer = 16 << 20

// Response is the server's answer to one command.
type Response struct {
	// Lines are the output lines before the status line, without endings.
	Lines []string
	// OK is true for "+OK", false for "-ERR".
	OK bool
	// Status is the status text after "+OK:" or "-ERR:".
	Status string
	// Context is the context path of the prompt that followed, without
	// '#': "" at the root, "domain", "domain-account", ...
	Context string
}

// Session is one logged-in CLI connection. It is not safe for concurrent
// use: a Pool hands each session to one user at a time. After a timeout, a
// connection error or a protocol error the session is broken and must be
// closed; a Pool replaces it.
type Session struct {
	cfg     Config
	log     *slog.Logger
	conn    net.Conn
	r       *bufio.Reader
	context string // current context path ("" = root)
	// domain is the domain whose context the session entered last; it is
	// what a "domain" context path (which does not name it) refers to.
	domain string
	// enteredDomain is when the session entered that domain's context.
	enteredDomain time.Time
	broken        error
	out           []byte // the lines being sent
	line          []byte // the line being read
	text          []byte // the lines of the answer being read (readAnswer)
	spans         [][2]int
	// watching is the Done channel of the context whose cancellation
	// breaks off the session's I/O (arm); one watch serves every exchange
	// of a caller, so that each exchange costs a deadline, not a new
	// watch. unwatch and watchFired are its context.AfterFunc's.
	watching   <-chan struct{}
	unwatch    func() bool
	watchFired chan struct{}
}

// Dial connects, reads the banner and logs in. The session starts at the
// root context.
func Dial(ctx context.Context, cfg Config) (*Session, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Refuse unsendable credentials before connecting.
	if _, err := loginName(cfg.User); err != nil {
		return nil, withOp(err, "login to "+cfg.Addr)
	}
	if err := checkValue("password", cfg.Password); err != nil {
		return nil, withOp(err, "login to "+cfg.Addr)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.dialTimeout())
	defer cancel()
	var conn net.Conn
	var err error
	if cfg.TLS != nil {
		d := tls.Dialer{Config: cfg.TLS}
		conn, err = d.DialContext(ctx, "tcp", cfg.Addr)
	} else {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp", cfg.Addr)
	}
	if err != nil {
		return nil, ioError(ctx, "dial "+cfg.Addr, "", err)
	}
	conn = rawsock.Wrap(conn)
	s := &Session{cfg: cfg, log: log, conn: conn, r: bufio.NewReader(conn)}
	err = s.login(ctx)
	s.unwatchContext() // ctx ends here
	if err != nil {
		conn.Close()
		return nil, withOp(err, "login to "+cfg.Addr)
	}
	return s, nil
}

func (s *Session) login(ctx context.Context) error {
	s.arm(ctx, s.cfg.dialTimeout())
	banner, err := s.readAnswer(ctx, "", true, false)
	if err != nil {
		return err
	}
	if !strings.Contains(strings.ToUpper(strings.Join(banner.Lines, "\n")), "AXIGEN") {
		return s.fail(&Error{Kind: KindProtocol, Err: errorf("no Axigen banner before the prompt")})
	}
	if banner.Context != "login" {
		return s.fail(&Error{Kind: KindProtocol, Err: errorf("prompt %q where <login> was expected", banner.Context)})
	}
	name, _ := loginName(s.cfg.User) // checked by Dial
	user := Command{line: "USER " + name, masked: "USER " + name}
	if err := s.send(ctx, user); err != nil {
		return err
	}
	// Whether a "+OK" comes before "<password> " is unconfirmed: accept both.
	ans, err := s.readAnswer(ctx, user.masked, true, false)
	if err != nil {
		return err
	}
	if ans.Context != "password" {
		if ans.Status != "" && !ans.OK {
			return &Error{Kind: KindAuth, Cmd: user.masked, Status: ans.Status}
		}
		return s.fail(&Error{Kind: KindProtocol, Cmd: user.masked, Err: errorf("prompt %q where <password> was expected", ans.Context)})
	}
	pw := Command{line: s.cfg.Password, masked: "***"}
	if err := s.send(ctx, pw); err != nil {
		return err
	}
	ans, err = s.readAnswer(ctx, pw.masked, false, false)
	if err != nil {
		// A server past maxAuthErrors answers -ERR and closes: that is
		// still a refused login, not a network fault.
		var e *Error
		if errors.As(err, &e) && e.Kind == KindConnection && ans.Status != "" && !ans.OK {
			return &Error{Kind: KindAuth, Cmd: pw.masked, Status: ans.Status}
		}
		return err
	}
	if !ans.OK {
		return &Error{Kind: KindAuth, Cmd: pw.masked, Status: ans.Status}
	}
	if ans.Context != "" {
		return s.fail(&Error{Kind: KindProtocol, Cmd: pw.masked, Err: errorf("prompt %q where <#> was expected", ans.Context)})
	}
	s.context = ""
	s.log.Debug("axigen login", "addr", s.cfg.Addr, "user", s.cfg.User)
	return nil
}

// Context returns the current context path ("" at the root).
func (s *Session) Context() string { return s.context }

// Broken reports whether the session can no longer be used.
func (s *Session) Broken() bool { return s.broken != nil }

// Close ends the session, saying EXIT when the connection is still sound.
func (s *Session) Close() error {
	s.unwatchContext()
	if s.broken == nil {
		_ = s.conn.SetDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(s.conn, "EXIT\r\n")
		_, _ = io.Copy(io.Discard, io.LimitReader(s.r, 4096)) // the farewell, until the server closes
		s.broken = errors.New("session closed")
	}
	return s.conn.Close()
}

// Do sends one command and reads its answer. A "-ERR" answer returns the
// Response together with an *Error of KindServer; the session stays usable
// (the prompt says where it is). Any other error breaks the session.
func (s *Session) Do(ctx context.Context, cmd Command) (*Response, error) {
	ans, err := s.DoAll(ctx, []Command{cmd})
	if len(ans) == 0 {
		return nil, err
	}
	return ans[0], err
}

// DoAll sends cmds in one write and reads their answers in turn
// (pipelining, docs/axigen-cli.md): one round trip instead of one per
// command. The server runs every command, whatever the answers to those
// before it, so callers send together only commands whose failure does not
// make the later ones harmful. It returns the answers read; the error is
// the first "-ERR" (an *Error of KindServer, the session still usable), or
// an error that broke the session. With Config.NoPipelining the commands
// go one round trip each, and the first "-ERR" stops them.
func (s *Session) DoAll(ctx context.Context, cmds []Command) ([]*Response, error) {
	return s.doAll(ctx, cmds, !s.cfg.NoPipelining)
}

// doAll is DoAll, pipelined or not as asked.
func (s *Session) doAll(ctx context.Context, cmds []Command, pipelined bool) ([]*Response, error) {
	if !pipelined && len(cmds) > 1 {
		out := make([]*Response, 0, len(cmds))
		for _, cmd := range cmds {
			ans, err := s.doAll(ctx, []Command{cmd}, true)
			out = append(out, ans...)
			if err != nil {
				return out, err
			}
		}
		return out, nil
	}
	for _, cmd := range cmds {
		if cmd.IsZero() {
			return nil, &Error{Kind: KindProtocol, Err: errorf("empty command")}
		}
	}
	if len(cmds) == 0 {
		return nil, nil
	}
	if s.broken != nil {
		return nil, &Error{Kind: KindConnection, Cmd: cmds[0].masked, Temporary: true, Err: s.broken}
	}
	if ctx.Err() != nil {
		// Nothing sent yet: the session stays usable.
		return nil, ioError(ctx, "", cmds[0].masked, ctx.Err())
	}
	if guard := guardOf(ctx); guard != nil {
		if err := guard(ctx); err != nil {
			// Nothing sent: the session stays usable.
			return nil, &Error{Kind: KindConnection, Cmd: cmds[0].masked, Temporary: true, Err: fmt.Errorf("%w: %w", ErrGuard, err)}
		}
	}
	// Each answer has the command timeout, as if the commands went one by one.
	s.arm(ctx, time.Duration(len(cmds))*s.cfg.commandTimeout())
	if err := s.send(ctx, cmds...); err != nil {
		return nil, err
	}
	out := make([]*Response, 0, len(cmds))
	var refused error
	// Checked once: a record's arguments would be made (and allocated) for
	// each command even when the logger drops them.
	debug := s.log.Enabled(ctx, slog.LevelDebug)
	for i, cmd := range cmds {
		ans, err := s.readAnswer(ctx, cmd.masked, false, i < len(cmds)-1)
		if err != nil {
			return out, err
		}
		out = append(out, ans)
		s.context = ans.Context
		if ans.Context == "" {
			s.domain = ""
		}
		if debug {
			s.log.Debug("axigen command", "addr", s.cfg.Addr, "cmd", cmd.masked, "ok", ans.OK, "status", ans.Status, "context", ans.Context)
		}
		if !ans.OK && refused == nil {
			refused = &Error{Kind: KindServer, Cmd: cmd.masked, Status: ans.Status}
		}
	}
	return out, refused
}

// arm bounds the coming I/O by timeout and by ctx (as deadline.Arm): the
// connection's deadline is set, and ctx's cancellation sets it in the
// past. The watch on ctx stays for the next exchanges of the same context
// (an apply's several), until one of another context comes or the pool
// takes the session back (unwatchContext).
func (s *Session) arm(ctx context.Context, timeout time.Duration) {
	d := time.Now().Add(timeout)
	if cd, ok := ctx.Deadline(); ok && cd.Before(d) {
		d = cd
	}
	done := ctx.Done()
	if done != s.watching {
		s.unwatchContext()
	}
	// A failure shows in the I/O it bounds.
	_ = s.conn.SetDeadline(d)
	switch {
	case done == nil:
	case s.unwatch != nil:
		// Watched already: a cancellation before the deadline above was
		// set has moved it in the past, and was overwritten.
		if ctx.Err() != nil {
			_ = s.conn.SetDeadline(time.Unix(1, 0))
		}
	default:
		fired, conn := make(chan struct{}), s.conn
		s.unwatch = context.AfterFunc(ctx, func() {
			defer close(fired)
			_ = conn.SetDeadline(time.Unix(1, 0))
		})
		s.watching, s.watchFired = done, fired
	}
}

// unwatchContext ends arm's watch; once it returns, the context's
// cancellation no longer touches the connection.
func (s *Session) unwatchContext() {
	if s.unwatch != nil && !s.unwatch() {
		<-s.watchFired
	}
	s.watching, s.unwatch, s.watchFired = nil, nil, nil
}

// send writes the command lines in one write.
func (s *Session) send(ctx context.Context, cmds ...Command) error {
	if n := s.r.Buffered(); n > 0 {
		// Bytes nobody asked for: the conversation is out of step.
		return s.fail(&Error{Kind: KindProtocol, Cmd: cmds[0].masked, Err: errorf("%d unexpected bytes before the command", n)})
	}
	s.out = s.out[:0]
	for _, cmd := range cmds {
		s.out = append(append(s.out, cmd.line...), '\r', '\n')
	}
	_, err := s.conn.Write(s.out)
	clear(s.out) // a password may be among the lines
	if err != nil {
		return s.fail(ioError(ctx, "", cmds[0].masked, err))
	}
	return nil
}

// fail marks the session broken, closes its connection and returns err.
func (s *Session) fail(err error) error {
	if s.broken == nil {
		s.broken = err
		s.conn.Close()
	}
	return err
}

// readAnswer reads output lines, the status line and the prompt. A prompt
// is recognised only right after a status line (or anywhere when bare is
// set: the banner and USER may end in a prompt alone), only when it is all
// the server has sent, and only in the shape "<path> ": so an output line
// that happens to look like a status line or a prompt is still output.
// With more set, answers to later commands sent with this one (DoAll) may
// follow the prompt at once, so it need not be all the server has sent.
func (s *Session) readAnswer(ctx context.Context, cmd string, bare, more bool) (*Response, error) {
	// The answer's complete lines go, without their endings, into text
	// (spans marks them), which becomes one string at the end: a string
	// per line cost an allocation each, several per command.
	text, spans := s.text[:0], s.spans[:0]
	status := -1       // the span of the last status line, while it is the last line
	line := s.line[:0] // the line being read, in a buffer kept for the next answers
	defer func() {
		if cap(line) <= maxKeptLine {
			s.line = line[:0]
		}
		if cap(text) <= maxKeptLine {
			s.text, s.spans = text[:0], spans[:0]
		}
	}()
	// done makes the Response of what was read: the lines, and the status
	// line when the last line was one (parsed when parse is set).
	done := func(parse bool) *Response {
		all := string(text)
		ans := &Response{}
		n := len(spans)
		if status >= 0 {
			n--
		}
		if n > 0 {
			ans.Lines = make([]string, 0, n)
		}
		for i, sp := range spans {
			if i != status {
				ans.Lines = append(ans.Lines, all[sp[0]:sp[1]])
			}
		}
		if status >= 0 {
			ans.Status = all[spans[status][0]:spans[status][1]]
			if parse {
				ans.Status, ans.OK = parseStatus(ans.Status)
			}
		}
		return ans
	}
	total := 0
	for {
		// The bytes the reader holds are scanned in place, a line (or a
		// prompt's candidate) at a time: reading them byte by byte cost a
		// call per byte, a sizeable share of a delivery's CPU time.
		if s.r.Buffered() == 0 {
			if _, err := s.r.Peek(1); err != nil {
				return done(true), s.fail(ioError(ctx, "", cmd, err))
			}
		}
		chunk, _ := s.r.Peek(s.r.Buffered())
		rest, used := chunk, 0
		for len(rest) > 0 {
			statusSeen := status >= 0
			// Only a line's end matters, and a space while a prompt may
			// come (it ends in one).
			var j int
			if statusSeen || bare {
				j = bytes.IndexAny(rest, " \n")
			} else {
				j = bytes.IndexByte(rest, '\n')
			}
			if j < 0 {
				j = len(rest) - 1
			}
			c := rest[j]
			line = append(line, rest[:j+1]...)
			rest, used, total = rest[j+1:], used+j+1, total+j+1
			if total > maxAnswer {
				_, _ = s.r.Discard(used)
				return done(false), s.fail(&Error{Kind: KindProtocol, Cmd: cmd, Err: errorf("answer longer than %d bytes", maxAnswer)})
			}
			if c == '\n' {
				// A status line followed by another line was output after
				// all: it stays among the lines, in its place.
				status = -1
				lt := bytes.TrimSuffix(line[:len(line)-1], []byte{'\r'})
				spans = append(spans, [2]int{len(text), len(text) + len(lt)})
				text = append(text, lt...)
				line = line[:0]
				if isStatusLineBytes(lt) {
					status = len(spans) - 1
				}
				continue
			}
			// rest is empty when the reader holds nothing after c.
			if c == ' ' && (statusSeen || bare) && (more || len(rest) == 0) && maybePrompt(line) {
				if path, ok := parsePrompt(string(line)); ok {
					_, _ = s.r.Discard(used)
					ans := done(true)
					if !statusSeen {
						ans.Status, ans.OK = "", true
					}
					ans.Context = path
					return ans, nil
				}
			}
		}
		_, _ = s.r.Discard(used)
	}
}

// maybePrompt is parsePrompt's first check, on bytes: the shape "<...> ".
func maybePrompt(line []byte) bool {
	n := len(line)
	return n >= 4 && line[0] == '<' && line[n-2] == '>' && line[n-1] == ' '
}

// maxKeptLine bounds the line buffer a session keeps between answers.
const maxKeptLine = 64 << 10

func isStatusLine(text string) bool {
	return strings.HasPrefix(text, "+OK") || strings.HasPrefix(text, "-ERR")
}

func isStatusLineBytes(text []byte) bool {
	return bytes.HasPrefix(text, []byte("+OK")) || bytes.HasPrefix(text, []byte("-ERR"))
}

// parseStatus splits "+OK: text" or "-ERR: text" (the colon tolerated
// missing).
func parseStatus(line string) (string, bool) {
	ok := strings.HasPrefix(line, "+OK")
	rest := strings.TrimPrefix(strings.TrimPrefix(line, "+OK"), "-ERR")
	rest = strings.TrimPrefix(rest, ":")
	return strings.TrimSpace(rest), ok
}

// parsePrompt recognises "<login> ", "<password> ", "<#> " and "<a-b#> ",
// returning the context path without '#' ("login" and "password" for the
// login prompts, "" for the root).
func parsePrompt(s string) (string, bool) {
	if len(s) < 4 || len(s) > 256 || s[0] != '<' || !strings.HasSuffix(s, "> ") {
		return "", false
	}
	inner := s[1 : len(s)-2]
	if strings.ContainsAny(inner, "<> \r\n\t") {
		return "", false
	}
	switch {
	case inner == "login" || inner == "password":
		return inner, true
	case strings.HasSuffix(inner, "#"):
		return strings.TrimSuffix(inner, "#"), true
	}
	return "", false
}

// ioError turns a network error into an *Error that says whether a retry
// can help.
func ioError(ctx context.Context, op, cmd string, err error) *Error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			return &Error{Kind: KindTimeout, Op: op, Cmd: cmd, Temporary: true, Err: ctxErr}
		}
		return &Error{Kind: KindCanceled, Op: op, Cmd: cmd, Err: ctxErr}
	}
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) {
		// The server's certificate will not verify on a retry either.
		return &Error{Kind: KindConnection, Op: op, Cmd: cmd, Err: err}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &Error{Kind: KindTimeout, Op: op, Cmd: cmd, Temporary: true, Err: err}
	}
	return &Error{Kind: KindConnection, Op: op, Cmd: cmd, Temporary: true, Err: err}
}
