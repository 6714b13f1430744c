package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/ldapgate/ldapgate/internal/ber"
)

// The bench's client speaks LDAP with hand-encoded messages and reads
// responses with just enough parsing to check them, so that its own CPU use
// is small next to the servers' on a machine with few cores.

func message(id int, op []byte) []byte {
	return ber.AppendTLV(nil, 0x30, append(ber.AppendInt(nil, 0x02, int64(id)), op...))
}

func bindRequest(id int, dn, password string) []byte {
	var c []byte
	c = ber.AppendInt(c, 0x02, 3)
	c = ber.AppendTLV(c, 0x04, []byte(dn))
	c = ber.AppendTLV(c, 0x80, []byte(password))
	return message(id, ber.AppendTLV(nil, 0x60, c))
}

// searchRequest is a subtree search under base for (attr=value),
// returning attrs.
func searchRequest(id int, base, attr, value string, attrs ...string) []byte {
	var c []byte
	c = ber.AppendTLV(c, 0x04, []byte(base))
	c = append(c, 0x0a, 0x01, 0x02) // scope: wholeSubtree
	c = append(c, 0x0a, 0x01, 0x00) // derefAliases: never
	c = append(c, 0x02, 0x01, 0x00) // sizeLimit
	c = append(c, 0x02, 0x01, 0x00) // timeLimit
	c = append(c, 0x01, 0x01, 0x00) // typesOnly
	var f []byte
	f = ber.AppendTLV(f, 0x04, []byte(attr))
	f = ber.AppendTLV(f, 0x04, []byte(value))
	c = ber.AppendTLV(c, 0xa3, f) // equalityMatch
	var as []byte
	for _, a := range attrs {
		as = ber.AppendTLV(as, 0x04, []byte(a))
	}
	c = ber.AppendTLV(c, 0x30, as)
	return message(id, ber.AppendTLV(nil, 0x63, c))
}

func unbindRequest(id int) []byte { return message(id, []byte{0x42, 0x00}) }

// Response operation tags.
const (
	opBindResponse   = 0x61
	opSearchEntry    = 0x64
	opSearchDone     = 0x65
	opSearchRef      = 0x73
	opExtendedResult = 0x78
)

// conn is one client connection.
type conn struct {
	c    net.Conn
	r    *bufio.Reader
	buf  []byte
	next int
}

func dial(addr string) (*conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &conn{c: c, r: bufio.NewReaderSize(c, 16<<10), next: 1}, nil
}

func (c *conn) close() error { return c.c.Close() }

func (c *conn) id() int {
	id := c.next
	c.next++
	return id
}

// readMessage returns the protocolOp tag and its content.
func (c *conn) readMessage() (byte, []byte, error) {
	tag, err := c.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	if tag != 0x30 {
		return 0, nil, fmt.Errorf("response starts with 0x%02x", tag)
	}
	n, err := ber.ReadLength(c.r)
	if err != nil {
		return 0, nil, err
	}
	if n > 16<<20 {
		return 0, nil, fmt.Errorf("response of %d bytes", n)
	}
	if cap(c.buf) < n {
		c.buf = make([]byte, n)
	}
	body := c.buf[:n]
	if _, err := io.ReadFull(c.r, body); err != nil {
		return 0, nil, err
	}
	idTag, _, rest, err := ber.Next(body)
	if err != nil || idTag != 0x02 {
		return 0, nil, errors.New("response without a message ID")
	}
	op, content, _, err := ber.Next(rest)
	if err != nil {
		return 0, nil, fmt.Errorf("response without a protocolOp: %w", err)
	}
	return op, content, nil
}

// resultCode reads the resultCode at the start of an LDAPResult.
func resultCode(content []byte) (int, error) {
	if len(content) < 3 || content[0] != 0x0a || content[1] != 0x01 {
		return 0, errors.New("LDAPResult without a resultCode")
	}
	return int(content[2]), nil
}

// bind performs a simple bind and checks it succeeded.
func (c *conn) bind(dn, password string) error {
	if _, err := c.c.Write(bindRequest(c.id(), dn, password)); err != nil {
		return err
	}
	op, content, err := c.readMessage()
	if err != nil {
		return err
	}
	if op != opBindResponse {
		return fmt.Errorf("bind answered with op 0x%02x", op)
	}
	code, err := resultCode(content)
	if err == nil && code != 0 {
		err = fmt.Errorf("bind as %s: result %d", dn, code)
	}
	return err
}

// searchOne searches for (attr=value) and checks exactly one entry came
// back with success.
func (c *conn) searchOne(base, attr, value string) error {
	if _, err := c.c.Write(searchRequest(c.id(), base, attr, value, "mail", "cn")); err != nil {
		return err
	}
	entries := 0
	for {
		op, content, err := c.readMessage()
		if err != nil {
			return err
		}
		switch op {
		case opSearchEntry:
			entries++
		case opSearchRef:
		case opSearchDone:
			code, err := resultCode(content)
			if err != nil {
				return err
			}
			if code != 0 || entries != 1 {
				return fmt.Errorf("search (%s=%s): result %d with %d entries", attr, value, code, entries)
			}
			return nil
		default:
			return fmt.Errorf("search answered with op 0x%02x", op)
		}
	}
}

func (c *conn) unbind() error {
	_, err := c.c.Write(unbindRequest(c.id()))
	return err
}
