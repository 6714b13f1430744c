package main

import (
	"fmt"
	"net"
	"time"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
)

// The bench's client speaks LDAP with ldapwire's encoders and reads
// responses with just enough parsing to check them, so that its own CPU use
// is small next to the servers' on a machine with few cores.

// maxResponse bounds one response: the bench's entries are small.
const maxResponse = 16 << 20

// conn is one client connection.
type conn struct {
	c    net.Conn
	r    *ldapwire.Reader
	out  []byte
	next int64
}

func dial(addr string) (*conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &conn{c: c, r: ldapwire.NewReader(c, maxResponse), next: 1}, nil
}

func (c *conn) close() error { return c.c.Close() }

// send writes one request protocolOp with the next message ID.
func (c *conn) send(op []byte) error {
	c.out = ldapwire.AppendMessage(c.out[:0], c.next, op)
	c.next++
	_, err := c.c.Write(c.out)
	return err
}

// bind performs a simple bind and checks it succeeded.
func (c *conn) bind(dn, password string) error {
	if err := c.send(ldapwire.AppendBindRequest(nil, dn, []byte(password))); err != nil {
		return err
	}
	m, err := c.r.Next()
	if err != nil {
		return err
	}
	if m.Op != ldapwire.TagBindResponse {
		return fmt.Errorf("bind answered with op 0x%02x", m.Op)
	}
	if code, ok := ldapwire.ResultCode(m.OpContent); !ok || code != 0 {
		return fmt.Errorf("bind as %s: result %d", dn, code)
	}
	return nil
}

// searchOne searches the subtree under base for (attr=value) and checks
// exactly one entry came back with success.
func (c *conn) searchOne(base, attr, value string) error {
	op := ldapwire.AppendSearchRequest(nil, ldapwire.SearchRequest{
		Base: base, Scope: ldapwire.ScopeSubtree, Filter: ldapwire.FilterEqual(attr, value),
		Attributes: []string{"mail", "cn"},
	})
	if err := c.send(op); err != nil {
		return err
	}
	entries := 0
	for {
		m, err := c.r.Next()
		if err != nil {
			return err
		}
		switch m.Op {
		case ldapwire.TagSearchEntry:
			entries++
		case ldapwire.TagSearchReference:
		case ldapwire.TagSearchDone:
			code, ok := ldapwire.ResultCode(m.OpContent)
			if !ok || code != 0 || entries != 1 {
				return fmt.Errorf("search (%s=%s): result %d with %d entries", attr, value, code, entries)
			}
			return nil
		default:
			return fmt.Errorf("search answered with op 0x%02x", m.Op)
		}
	}
}

func (c *conn) unbind() error {
	return c.send([]byte{ldapwire.TagUnbindRequest, 0x00})
}

// replace replaces attr of the entry dn with the one value and checks the
// directory answered success.
func (c *conn) replace(dn, attr, value string) error {
	val := ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte(value))
	part := ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte(attr))
	part = ldapwire.AppendTLV(part, ldapwire.TagSet, val)
	change := ldapwire.AppendInt(nil, ldapwire.TagEnumerated, 2) // replace
	change = ldapwire.AppendTLV(change, ldapwire.TagSequence, part)
	changes := ldapwire.AppendTLV(nil, ldapwire.TagSequence, change)
	body := ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte(dn))
	body = ldapwire.AppendTLV(body, ldapwire.TagSequence, changes)
	if err := c.send(ldapwire.AppendTLV(nil, ldapwire.TagModifyRequest, body)); err != nil {
		return err
	}
	m, err := c.r.Next()
	if err != nil {
		return err
	}
	if m.Op != ldapwire.TagModifyResponse {
		return fmt.Errorf("modify answered with op 0x%02x", m.Op)
	}
	if code, ok := ldapwire.ResultCode(m.OpContent); !ok || code != 0 {
		return fmt.Errorf("modify of %s: result %d", dn, code)
	}
	return nil
}
