package mirror

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/ber"
	"github.com/ldapgate/ldapgate/internal/deadline"
	"github.com/ldapgate/ldapgate/internal/rawsock"
	"github.com/ldapgate/ldapgate/schema"
)

// readConn is a connection of the gateway's own to the directory, bound as
// the service identity, for its reads of single entries: the policy's read
// of a write's target and the delivery's read of the entry to mirror, one
// or two per write. It sends a request and reads its answer on the calling
// goroutine. go-ldap's connection hands every message through two
// goroutines of its own and decodes it into a tree of packets, which cost
// the gateway about a fifth of its CPU time under write load; this costs a
// fraction of it. Searches of many entries (paged) stay with go-ldap.
//
// A readConn is used by one goroutine at a time (Directory's pool). After
// an I/O or protocol error it is broken and must be closed.
type readConn struct {
	conn    net.Conn
	r       *bufio.Reader
	timeout time.Duration
	lastID  int32
	msg     []byte // the last message read, reused
	out     []byte // the request being written, reused
	broken  error
}

// maxReadMessage bounds one message from the directory: an entry of the
// attributes the gateway asks for is far smaller (a group of about 300,000
// members would not be). keptMessageBuffer is the largest message buffer
// a connection keeps between reads.
const (
	maxReadMessage    = 16 << 20
	keptMessageBuffer = 64 << 10
)

// LDAP protocol tags (RFC 4511) of the messages a readConn exchanges.
const (
	tagSequence       = 0x30
	tagSet            = 0x31
	tagInteger        = 0x02
	tagOctetString    = 0x04
	tagEnumerated     = 0x0a
	tagBoolean        = 0x01
	tagBindRequest    = 0x60
	tagBindResponse   = 0x61
	tagSearchRequest  = 0x63
	tagSearchEntry    = 0x64
	tagSearchDone     = 0x65
	tagSearchRef      = 0x73
	tagExtendedReq    = 0x77
	tagExtendedResp   = 0x78
	tagSimpleAuth     = 0x80 // [0] in a bind request
	tagExtendedName   = 0x80 // [0] in an extended request
	oidStartTLS       = "1.3.6.1.4.1.1466.20037"
	ldapVersion3      = 3
	derefNeverAliases = 0
)

// dialRead connects to the first directory URL that answers (StartTLS or
// ldaps:// as configured) and binds as the service identity.
func (d *Directory) dialRead(ctx context.Context) (*readConn, error) {
	var errs []error
	for _, u := range *d.urls.Load() {
		c, err := d.dialReadURL(ctx, u)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u, err))
			continue
		}
		if err := c.bind(ctx, d.cfg.ServiceDN, d.cfg.ServicePassword); err != nil {
			c.close()
			return nil, fmt.Errorf("bind as the service DN %s: %w", d.cfg.ServiceDN, err)
		}
		return c, nil
	}
	if len(errs) == 0 {
		return nil, errors.New("no directory URL configured")
	}
	return nil, fmt.Errorf("connect to the directory: %w", errors.Join(errs...))
}

func (d *Directory) dialReadURL(ctx context.Context, raw string) (*readConn, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	scheme := strings.ToLower(u.Scheme)
	host, port := u.Hostname(), u.Port()
	switch {
	case scheme == "ldap" && port == "":
		port = "389"
	case scheme == "ldaps" && port == "":
		port = "636"
	case scheme != "ldap" && scheme != "ldaps":
		return nil, fmt.Errorf("scheme %q: ldap or ldaps expected", u.Scheme)
	}
	tlsConfig := func() *tls.Config {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if d.cfg.TLS != nil {
			cfg = d.cfg.TLS.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = host // the name to verify is the URL's host
		}
		return cfg
	}
	dialCtx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	nd := &net.Dialer{}
	conn, err := nd.DialContext(dialCtx, "tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, err
	}
	conn = rawsock.Wrap(conn)
	if scheme == "ldaps" {
		tc := tls.Client(conn, tlsConfig())
		if err := tc.HandshakeContext(dialCtx); err != nil {
			conn.Close()
			return nil, err
		}
		conn = tc
	}
	c := &readConn{conn: conn, r: bufio.NewReaderSize(conn, 8<<10), timeout: d.cfg.Timeout}
	if scheme == "ldap" && d.cfg.StartTLS {
		if err := c.startTLS(dialCtx, tlsConfig()); err != nil {
			c.close()
			return nil, fmt.Errorf("StartTLS: %w", err)
		}
	}
	return c, nil
}

func (c *readConn) close() {
	if c.broken == nil {
		c.broken = errors.New("connection closed")
	}
	c.conn.Close()
}

// fail breaks the connection: what follows on it cannot be trusted.
func (c *readConn) fail(err error) error {
	if c.broken == nil {
		c.broken = err
		c.conn.Close()
	}
	return ldap.NewError(ldap.ErrorNetwork, err)
}

// roundTrip sends one request (its protocol operation, already encoded)
// and returns the protocol operations of its answer: every message until
// one whose tag is final.
func (c *readConn) roundTrip(ctx context.Context, op []byte, final byte, each func(tag byte, content []byte) error) error {
	if c.broken != nil {
		return ldap.NewError(ldap.ErrorNetwork, c.broken)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// A cancelled context ends the wait at once, as its deadline would;
	// the connection is then broken (c.fail), not reused mid-answer.
	disarm, err := deadline.Arm(ctx, c.conn, c.timeout)
	defer disarm()
	if err != nil {
		return c.fail(err)
	}
	c.lastID++
	if c.lastID <= 0 {
		c.lastID = 1
	}
	id := c.lastID
	c.out = encodeMessage(c.out[:0], id, op)
	if _, err := c.conn.Write(c.out); err != nil {
		return c.fail(err)
	}
	for {
		msgID, tag, content, err := c.readMessage()
		if err != nil {
			return c.fail(err)
		}
		if msgID != int64(id) {
			// Message 0 is the server's notice that it is closing the
			// connection; anything else is out of step.
			return c.fail(fmt.Errorf("message %d from the directory where %d was expected", msgID, id))
		}
		if err := each(tag, content); err != nil {
			return err
		}
		if tag == final {
			return nil
		}
	}
}

// readMessage reads one LDAPMessage and returns its ID, its protocol
// operation's tag and content (valid until the next read).
func (c *readConn) readMessage() (id int64, tag byte, content []byte, err error) {
	t, err := c.r.ReadByte()
	if err != nil {
		return 0, 0, nil, unexpectedEOF(err)
	}
	if t != tagSequence {
		return 0, 0, nil, fmt.Errorf("message with tag %#x from the directory", t)
	}
	n, err := ber.ReadLength(c.r)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("message length from the directory: %w", unexpectedEOF(err))
	}
	if n < 0 || n > maxReadMessage {
		return 0, 0, nil, fmt.Errorf("message of %d bytes from the directory", n)
	}
	if cap(c.msg) > keptMessageBuffer {
		c.msg = nil // a rare large entry's buffer is not kept for the connection's life
	}
	if cap(c.msg) < n {
		c.msg = make([]byte, n)
	}
	c.msg = c.msg[:n]
	if _, err := io.ReadFull(c.r, c.msg); err != nil {
		return 0, 0, nil, unexpectedEOF(err)
	}
	itag, idBytes, rest, err := ber.Next(c.msg)
	if err != nil || itag != tagInteger {
		return 0, 0, nil, fmt.Errorf("message without an ID from the directory")
	}
	id, err = ber.ParseInt(idBytes)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("message ID from the directory: %w", err)
	}
	tag, content, _, err = ber.Next(rest)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("message from the directory: %w", err)
	}
	return id, tag, content, nil
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// bind makes a simple bind.
func (c *readConn) bind(ctx context.Context, dn, password string) error {
	op := ber.AppendInt(nil, tagInteger, ldapVersion3)
	op = ber.AppendTLV(op, tagOctetString, []byte(dn))
	op = ber.AppendTLV(op, tagSimpleAuth, []byte(password))
	return c.roundTrip(ctx, ber.AppendTLV(nil, tagBindRequest, op), tagBindResponse, func(tag byte, content []byte) error {
		if tag != tagBindResponse {
			return c.fail(fmt.Errorf("answer %#x to a bind", tag))
		}
		return c.result(content)
	})
}

// startTLS asks for TLS on the connection and then shakes hands.
func (c *readConn) startTLS(ctx context.Context, cfg *tls.Config) error {
	op := ber.AppendTLV(nil, tagExtendedReq, ber.AppendTLV(nil, tagExtendedName, []byte(oidStartTLS)))
	err := c.roundTrip(ctx, op, tagExtendedResp, func(tag byte, content []byte) error {
		if tag != tagExtendedResp {
			return c.fail(fmt.Errorf("answer %#x to StartTLS", tag))
		}
		return c.result(content)
	})
	if err != nil {
		return err
	}
	if c.r.Buffered() > 0 {
		return c.fail(errors.New("data after the StartTLS answer"))
	}
	tc := tls.Client(c.conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return c.fail(err)
	}
	c.conn = tc
	c.r.Reset(tc)
	return nil
}

// result turns an LDAPResult into nil (success) or an *ldap.Error.
func (c *readConn) result(content []byte) error {
	tag, codeBytes, rest, err := ber.Next(content)
	if err != nil || tag != tagEnumerated {
		return c.fail(errors.New("result without a code from the directory"))
	}
	code, err := ber.ParseInt(codeBytes)
	if err != nil {
		return c.fail(fmt.Errorf("result code from the directory: %w", err))
	}
	if code == ldap.LDAPResultSuccess {
		return nil
	}
	var diagnostic []byte
	if _, _, rest, err = ber.Next(rest); err == nil { // matchedDN
		_, diagnostic, _, _ = ber.Next(rest)
	}
	return ldap.NewError(uint16(code), errors.New(string(diagnostic)))
}

// search returns the entries of a search; a result other than success is
// an *ldap.Error.
func (c *readConn) search(ctx context.Context, base string, scope, sizeLimit int, filter string, attrs []string) ([]schema.Entry, error) {
	f, err := ldap.CompileFilter(filter)
	if err != nil {
		return nil, err
	}
	op := ber.AppendTLV(nil, tagOctetString, []byte(base))
	op = ber.AppendInt(op, tagEnumerated, int64(scope))
	op = ber.AppendInt(op, tagEnumerated, derefNeverAliases)
	op = ber.AppendInt(op, tagInteger, int64(sizeLimit))
	op = ber.AppendInt(op, tagInteger, 0) // no time limit
	op = ber.AppendTLV(op, tagBoolean, []byte{0})
	op = append(op, f.Bytes()...)
	var list []byte
	for _, a := range attrs {
		list = ber.AppendTLV(list, tagOctetString, []byte(a))
	}
	op = ber.AppendTLV(op, tagSequence, list)
	var entries []schema.Entry
	err = c.roundTrip(ctx, ber.AppendTLV(nil, tagSearchRequest, op), tagSearchDone, func(tag byte, content []byte) error {
		switch tag {
		case tagSearchEntry:
			if sizeLimit > 0 && len(entries) >= sizeLimit {
				return c.fail(fmt.Errorf("the directory sent more than the %d entries asked for", sizeLimit))
			}
			e, err := decodeEntry(content)
			if err != nil {
				return c.fail(err)
			}
			entries = append(entries, e)
		case tagSearchRef:
			// A continuation reference: the gateway does not chase them.
		case tagSearchDone:
			return c.result(content)
		default:
			return c.fail(fmt.Errorf("answer %#x to a search", tag))
		}
		return nil
	})
	return entries, err
}

// decodeEntry decodes a SearchResultEntry.
func decodeEntry(content []byte) (schema.Entry, error) {
	tag, dn, rest, err := ber.Next(content)
	if err != nil || tag != tagOctetString {
		return schema.Entry{}, errors.New("search entry without a DN")
	}
	tag, list, _, err := ber.Next(rest)
	if err != nil || tag != tagSequence {
		return schema.Entry{}, errors.New("search entry without attributes")
	}
	e := schema.Entry{DN: string(dn), Attrs: map[string][]string{}}
	for len(list) > 0 {
		var attr []byte
		if tag, attr, list, err = ber.Next(list); err != nil || tag != tagSequence {
			return schema.Entry{}, errors.New("malformed attribute in a search entry")
		}
		tag, name, rest, err := ber.Next(attr)
		if err != nil || tag != tagOctetString {
			return schema.Entry{}, errors.New("attribute without a type in a search entry")
		}
		tag, vals, _, err := ber.Next(rest)
		if err != nil || tag != tagSet {
			return schema.Entry{}, errors.New("attribute without values in a search entry")
		}
		var values []string
		for len(vals) > 0 {
			var v []byte
			if tag, v, vals, err = ber.Next(vals); err != nil || tag != tagOctetString {
				return schema.Entry{}, errors.New("malformed value in a search entry")
			}
			values = append(values, string(v))
		}
		if values == nil {
			values = []string{}
		}
		e.Attrs[string(name)] = values
	}
	return e, nil
}

// encodeMessage appends an LDAPMessage holding op (an encoded protocol
// operation) to b.
func encodeMessage(b []byte, id int32, op []byte) []byte {
	var idBuf [8]byte
	content := ber.AppendInt(idBuf[:0], tagInteger, int64(id))
	b = append(b, tagSequence)
	b = ber.AppendLength(b, len(content)+len(op))
	b = append(b, content...)
	return append(b, op...)
}
