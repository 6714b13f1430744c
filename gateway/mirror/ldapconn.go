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
	deadline := time.Now().Add(c.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := c.conn.SetDeadline(deadline); err != nil {
		return c.fail(err)
	}
	// A cancelled context ends the wait at once, as its deadline would;
	// the connection is then broken (c.fail), not reused mid-answer. A
	// cancellation under way when the answer is complete is waited for, so
	// that its deadline cannot land on the connection's next caller.
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		_ = c.conn.SetDeadline(time.Unix(1, 0))
	})
	defer func() {
		if !stop() {
			<-fired
		}
	}()
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
	n, err := readLength(c.r)
	if err != nil {
		return 0, 0, nil, err
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
	itag, idBytes, rest, err := nextTLV(c.msg)
	if err != nil || itag != tagInteger {
		return 0, 0, nil, fmt.Errorf("message without an ID from the directory")
	}
	id, err = parseInteger(idBytes)
	if err != nil {
		return 0, 0, nil, err
	}
	tag, content, _, err = nextTLV(rest)
	if err != nil {
		return 0, 0, nil, err
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
	op := appendInt(nil, tagInteger, ldapVersion3)
	op = appendTLV(op, tagOctetString, []byte(dn))
	op = appendTLV(op, tagSimpleAuth, []byte(password))
	return c.roundTrip(ctx, appendTLV(nil, tagBindRequest, op), tagBindResponse, func(tag byte, content []byte) error {
		if tag != tagBindResponse {
			return c.fail(fmt.Errorf("answer %#x to a bind", tag))
		}
		return c.result(content)
	})
}

// startTLS asks for TLS on the connection and then shakes hands.
func (c *readConn) startTLS(ctx context.Context, cfg *tls.Config) error {
	op := appendTLV(nil, tagExtendedReq, appendTLV(nil, tagExtendedName, []byte(oidStartTLS)))
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
	tag, codeBytes, rest, err := nextTLV(content)
	if err != nil || tag != tagEnumerated {
		return c.fail(errors.New("result without a code from the directory"))
	}
	code, err := parseInteger(codeBytes)
	if err != nil {
		return c.fail(err)
	}
	if code == ldap.LDAPResultSuccess {
		return nil
	}
	var diagnostic []byte
	if _, _, rest, err = nextTLV(rest); err == nil { // matchedDN
		_, diagnostic, _, _ = nextTLV(rest)
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
	op := appendTLV(nil, tagOctetString, []byte(base))
	op = appendInt(op, tagEnumerated, int64(scope))
	op = appendInt(op, tagEnumerated, derefNeverAliases)
	op = appendInt(op, tagInteger, int64(sizeLimit))
	op = appendInt(op, tagInteger, 0) // no time limit
	op = appendTLV(op, tagBoolean, []byte{0})
	op = append(op, f.Bytes()...)
	var list []byte
	for _, a := range attrs {
		list = appendTLV(list, tagOctetString, []byte(a))
	}
	op = appendTLV(op, tagSequence, list)
	var entries []schema.Entry
	err = c.roundTrip(ctx, appendTLV(nil, tagSearchRequest, op), tagSearchDone, func(tag byte, content []byte) error {
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
	tag, dn, rest, err := nextTLV(content)
	if err != nil || tag != tagOctetString {
		return schema.Entry{}, errors.New("search entry without a DN")
	}
	tag, list, _, err := nextTLV(rest)
	if err != nil || tag != tagSequence {
		return schema.Entry{}, errors.New("search entry without attributes")
	}
	e := schema.Entry{DN: string(dn), Attrs: map[string][]string{}}
	for len(list) > 0 {
		var attr []byte
		if tag, attr, list, err = nextTLV(list); err != nil || tag != tagSequence {
			return schema.Entry{}, errors.New("malformed attribute in a search entry")
		}
		tag, name, rest, err := nextTLV(attr)
		if err != nil || tag != tagOctetString {
			return schema.Entry{}, errors.New("attribute without a type in a search entry")
		}
		tag, vals, _, err := nextTLV(rest)
		if err != nil || tag != tagSet {
			return schema.Entry{}, errors.New("attribute without values in a search entry")
		}
		var values []string
		for len(vals) > 0 {
			var v []byte
			if tag, v, vals, err = nextTLV(vals); err != nil || tag != tagOctetString {
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
	content := appendInt(idBuf[:0], tagInteger, int64(id))
	b = append(b, tagSequence)
	b = appendLength(b, len(content)+len(op))
	b = append(b, content...)
	return append(b, op...)
}

// appendTLV appends an element with a definite length.
func appendTLV(b []byte, tag byte, content []byte) []byte {
	b = append(b, tag)
	b = appendLength(b, len(content))
	return append(b, content...)
}

func appendLength(b []byte, n int) []byte {
	switch {
	case n < 0x80:
		return append(b, byte(n))
	case n <= 0xff:
		return append(b, 0x81, byte(n))
	case n <= 0xffff:
		return append(b, 0x82, byte(n>>8), byte(n))
	case n <= 0xffffff:
		return append(b, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, 0x84, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// appendInt appends an INTEGER or ENUMERATED in the fewest bytes.
func appendInt(b []byte, tag byte, v int64) []byte {
	n := 1
	for x := v; x > 127 || x < -128; x >>= 8 {
		n++
	}
	b = append(b, tag, byte(n))
	for i := n - 1; i >= 0; i-- {
		b = append(b, byte(v>>(8*i)))
	}
	return b
}

// readLength reads a BER definite length.
func readLength(r *bufio.Reader) (int, error) {
	first, err := r.ReadByte()
	if err != nil {
		return 0, unexpectedEOF(err)
	}
	if first < 0x80 {
		return int(first), nil
	}
	k := int(first & 0x7f)
	if k == 0 || k > 4 {
		return 0, fmt.Errorf("length of %d bytes from the directory", k)
	}
	n := 0
	for range k {
		c, err := r.ReadByte()
		if err != nil {
			return 0, unexpectedEOF(err)
		}
		n = n<<8 | int(c)
	}
	return n, nil
}

// nextTLV splits the first element (single-byte tag, definite length) off
// data.
func nextTLV(data []byte) (tag byte, content, rest []byte, err error) {
	if len(data) < 2 {
		return 0, nil, nil, errors.New("truncated element from the directory")
	}
	tag = data[0]
	n, i := int(data[1]), 2
	if n >= 0x80 {
		k := n & 0x7f
		if k == 0 || k > 4 || len(data) < 2+k {
			return 0, nil, nil, errors.New("bad length from the directory")
		}
		n = 0
		for _, c := range data[2 : 2+k] {
			n = n<<8 | int(c)
		}
		i = 2 + k
	}
	if n < 0 || n > len(data)-i {
		return 0, nil, nil, errors.New("truncated element from the directory")
	}
	return tag, data[i : i+n], data[i+n:], nil
}

// parseInteger decodes a two's complement INTEGER or ENUMERATED.
func parseInteger(b []byte) (int64, error) {
	if len(b) == 0 || len(b) > 8 {
		return 0, fmt.Errorf("integer of %d bytes from the directory", len(b))
	}
	v := int64(int8(b[0]))
	for _, c := range b[1:] {
		v = v<<8 | int64(c)
	}
	return v, nil
}
