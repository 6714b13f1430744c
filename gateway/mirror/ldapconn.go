package mirror

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/deadline"
	"github.com/ldapgate/ldapgate/internal/ldapwire"
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
	r       *ldapwire.Reader
	timeout time.Duration
	lastID  int64
	out     []byte // the request being written, reused
	broken  error
}

// maxReadMessage bounds one message from the directory: an entry of the
// attributes the gateway asks for is far smaller (a group of about 300,000
// members would not be).
const maxReadMessage = 16 << 20

// LDAP tags of the messages a readConn exchanges.
const (
	tagSequence     = ldapwire.TagSequence
	tagSet          = ldapwire.TagSet
	tagOctetString  = ldapwire.TagOctetString
	tagBindResponse = ldapwire.TagBindResponse
	tagSearchEntry  = ldapwire.TagSearchEntry
	tagSearchDone   = ldapwire.TagSearchDone
	tagSearchRef    = ldapwire.TagSearchReference
)

func newReadConn(conn net.Conn, timeout time.Duration) *readConn {
	return &readConn{conn: conn, r: ldapwire.NewReader(conn, maxReadMessage), timeout: timeout}
}

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
	ep, err := ldapwire.ParseURL(raw)
	if err != nil {
		return nil, err
	}
	ep.StartTLS = d.cfg.StartTLS && !ep.TLS
	ep.TLSConfig = d.cfg.TLS
	ep.RawSyscalls = true // a readConn stays with its pool
	conn, err := ep.Dial(ctx, d.cfg.Timeout)
	if err != nil {
		return nil, err
	}
	c := newReadConn(conn, d.cfg.Timeout)
	if ep.StartTLS {
		c.lastID = 1 // StartTLS's
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
	if c.lastID <= 0 || c.lastID > math.MaxInt32 {
		c.lastID = 1
	}
	id := c.lastID
	c.out = ldapwire.AppendMessage(c.out[:0], id, op)
	if _, err := c.conn.Write(c.out); err != nil {
		return c.fail(err)
	}
	c.r.Release() // a rare large entry's buffer is not kept for the connection's life
	for {
		m, err := c.r.Next()
		if err != nil {
			return c.fail(err)
		}
		msgID, tag, content := m.ID, m.Op, m.OpContent
		if msgID != id {
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

// bind makes a simple bind.
func (c *readConn) bind(ctx context.Context, dn, password string) error {
	op := ldapwire.AppendBindRequest(nil, dn, []byte(password))
	return c.roundTrip(ctx, op, tagBindResponse, func(tag byte, content []byte) error {
		if tag != tagBindResponse {
			return c.fail(fmt.Errorf("answer %#x to a bind", tag))
		}
		return c.result(content)
	})
}

// result turns an LDAPResult into nil (success) or an *ldap.Error.
func (c *readConn) result(content []byte) error {
	res, err := ldapwire.DecodeResult(content)
	if err != nil {
		return c.fail(fmt.Errorf("result from the directory: %w", err))
	}
	if res.Code == ldap.LDAPResultSuccess {
		return nil
	}
	return ldap.NewError(uint16(res.Code), errors.New(res.Diagnostic))
}

// search returns the entries of a search; a result other than success is
// an *ldap.Error.
func (c *readConn) search(ctx context.Context, base string, scope, sizeLimit int, filter string, attrs []string) ([]schema.Entry, error) {
	f, err := ldap.CompileFilter(filter)
	if err != nil {
		return nil, err
	}
	op := ldapwire.AppendSearchRequest(nil, ldapwire.SearchRequest{
		Base: base, Scope: scope, DerefAliases: ldapwire.DerefNever, SizeLimit: sizeLimit,
		Filter: f.Bytes(), Attributes: attrs,
	})
	var entries []schema.Entry
	err = c.roundTrip(ctx, op, tagSearchDone, func(tag byte, content []byte) error {
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

// decodeEntry decodes a SearchResultEntry. Every write the gateway makes
// an image of decodes one (and a read one more), so it allocates little:
// the DN, names and values are pieces of one copy of content, and the
// values of all attributes share one array, counted first.
func decodeEntry(content []byte) (schema.Entry, error) {
	tag, dn, rest, err := ldapwire.Next(content)
	if err != nil || tag != tagOctetString {
		return schema.Entry{}, errors.New("search entry without a DN")
	}
	tag, list, _, err := ldapwire.Next(rest)
	if err != nil || tag != tagSequence {
		return schema.Entry{}, errors.New("search entry without attributes")
	}
	attrs, values, err := entryCounts(list)
	if err != nil {
		return schema.Entry{}, err
	}
	text := string(content)
	// piece is b, a part of content (ldapwire.Next slices without capping
	// capacity, so its offset shows in it), as a part of text.
	piece := func(b []byte) string {
		at := cap(content) - cap(b)
		return text[at : at+len(b)]
	}
	e := schema.Entry{DN: piece(dn), Attrs: make(map[string][]string, attrs)}
	all := make([]string, 0, values)
	for len(list) > 0 {
		// entryCounts checked the structure.
		_, attr, next, _ := ldapwire.Next(list)
		list = next
		_, name, rest, _ := ldapwire.Next(attr)
		_, vals, _, _ := ldapwire.Next(rest)
		first := len(all)
		for len(vals) > 0 {
			var v []byte
			_, v, vals, _ = ldapwire.Next(vals)
			all = append(all, piece(v))
		}
		e.Attrs[piece(name)] = all[first:len(all):len(all)]
	}
	return e, nil
}

// entryCounts checks the attribute list of a SearchResultEntry and counts
// its attributes and values.
func entryCounts(list []byte) (attrs, values int, err error) {
	for len(list) > 0 {
		tag, attr, next, err := ldapwire.Next(list)
		if err != nil || tag != tagSequence {
			return 0, 0, errors.New("malformed attribute in a search entry")
		}
		list = next
		tag, _, rest, err := ldapwire.Next(attr)
		if err != nil || tag != tagOctetString {
			return 0, 0, errors.New("attribute without a type in a search entry")
		}
		tag, vals, _, err := ldapwire.Next(rest)
		if err != nil || tag != tagSet {
			return 0, 0, errors.New("attribute without values in a search entry")
		}
		for len(vals) > 0 {
			if tag, _, vals, err = ldapwire.Next(vals); err != nil || tag != tagOctetString {
				return 0, 0, errors.New("malformed value in a search entry")
			}
			values++
		}
		attrs++
	}
	return attrs, values, nil
}
