package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// The bench's client speaks LDAP with hand-encoded messages and reads
// responses with just enough parsing to check them, so that its own CPU use
// is small next to the servers' on a machine with few cores.

func appendLength(b []byte, n int) []byte {
	switch {
	case n < 0x80:
		return append(b, byte(n))
	case n < 0x100:
		return append(b, 0x81, byte(n))
	case n < 0x10000:
		return append(b, 0x82, byte(n>>8), byte(n))
	default:
		return append(b, 0x84, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

func appendTLV(b []byte, tag byte, content []byte) []byte {
	return append(appendLength(append(b, tag), len(content)), content...)
}

func appendInt(b []byte, tag byte, v int) []byte {
	var c []byte
	switch {
	case v < 0x80:
		c = []byte{byte(v)}
	case v < 0x8000:
		c = []byte{byte(v >> 8), byte(v)}
	case v < 0x800000:
		c = []byte{byte(v >> 16), byte(v >> 8), byte(v)}
	default:
		c = []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	}
	return appendTLV(b, tag, c)
}

func message(id int, op []byte) []byte {
	return appendTLV(nil, 0x30, append(appendInt(nil, 0x02, id), op...))
}

func bindRequest(id int, dn, password string) []byte {
	var c []byte
	c = appendInt(c, 0x02, 3)
	c = appendTLV(c, 0x04, []byte(dn))
	c = appendTLV(c, 0x80, []byte(password))
	return message(id, appendTLV(nil, 0x60, c))
}

// searchRequest is a subtree search under base for (attr=value),
// returning attrs.
func searchRequest(id int, base, attr, value string, attrs ...string) []byte {
	var c []byte
	c = appendTLV(c, 0x04, []byte(base))
	c = append(c, 0x0a, 0x01, 0x02) // scope: wholeSubtree
	c = append(c, 0x0a, 0x01, 0x00) // derefAliases: never
	c = append(c, 0x02, 0x01, 0x00) // sizeLimit
	c = append(c, 0x02, 0x01, 0x00) // timeLimit
	c = append(c, 0x01, 0x01, 0x00) // typesOnly
	var f []byte
	f = appendTLV(f, 0x04, []byte(attr))
	f = appendTLV(f, 0x04, []byte(value))
	c = appendTLV(c, 0xa3, f) // equalityMatch
	var as []byte
	for _, a := range attrs {
		as = appendTLV(as, 0x04, []byte(a))
	}
	c = appendTLV(c, 0x30, as)
	return message(id, appendTLV(nil, 0x63, c))
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
	n, err := readLength(c.r)
	if err != nil {
		return 0, nil, err
	}
	if cap(c.buf) < n {
		c.buf = make([]byte, n)
	}
	body := c.buf[:n]
	if _, err := io.ReadFull(c.r, body); err != nil {
		return 0, nil, err
	}
	// Skip the messageID.
	if len(body) < 2 || body[0] != 0x02 || int(body[1])+2 > len(body) {
		return 0, nil, errors.New("response without a message ID")
	}
	rest := body[2+int(body[1]):]
	if len(rest) < 2 {
		return 0, nil, errors.New("response without a protocolOp")
	}
	op := rest[0]
	content, _, err := splitLength(rest[1:])
	return op, content, err
}

func readLength(r *bufio.Reader) (int, error) {
	b, err := r.ReadByte()
	if err != nil {
		return 0, err
	}
	if b < 0x80 {
		return int(b), nil
	}
	k := int(b & 0x7f)
	if k == 0 || k > 4 {
		return 0, fmt.Errorf("length of %d octets", k)
	}
	n := 0
	for range k {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		n = n<<8 | int(b)
	}
	if n > 16<<20 {
		return 0, fmt.Errorf("response of %d bytes", n)
	}
	return n, nil
}

// splitLength decodes a length at the start of b and returns the content.
func splitLength(b []byte) ([]byte, []byte, error) {
	if len(b) == 0 {
		return nil, nil, errors.New("missing length")
	}
	n, hdr := int(b[0]), 1
	if b[0] >= 0x80 {
		k := int(b[0] & 0x7f)
		if k == 0 || k > 4 || len(b) < 1+k {
			return nil, nil, errors.New("bad length")
		}
		n = 0
		for _, x := range b[1 : 1+k] {
			n = n<<8 | int(x)
		}
		hdr = 1 + k
	}
	if len(b) < hdr+n {
		return nil, nil, errors.New("length past the end")
	}
	return b[hdr : hdr+n], b[hdr+n:], nil
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
