package subtree

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// LDAP application tags the shim looks at.
const (
	appBindRequest     = 0
	appBindResponse    = 1
	appUnbindRequest   = 2
	appSearchRequest   = 3
	appSearchDone      = 5
	appModifyRequest   = 6
	appAddRequest      = 8
	appDelRequest      = 10
	appModDNRequest    = 12
	appCompareRequest  = 14
	appCompareResponse = 15
	appAbandonRequest  = 16
	appExtendedRequest = 23
)

// maxFrame bounds one message; the subtree's requests are small.
const maxFrame = 1 << 20

// shim sits between a gateway session and gldap: it reads the session's
// requests whole, passes searches to gldap and answers what gldap would
// answer by dropping the connection.
type shim struct {
	srv  *Server
	up   net.Conn // to gldap
	down net.Conn // the gateway's pipe

	wmu  sync.Mutex // whole messages to down
	once sync.Once
}

func newShim(srv *Server, up, down net.Conn) *shim {
	return &shim{srv: srv, up: up, down: down}
}

func (sh *shim) close() {
	sh.once.Do(func() {
		sh.up.Close()
		sh.down.Close()
		sh.srv.dropShim(sh)
	})
}

// writeDown sends one whole message to the gateway.
func (sh *shim) writeDown(raw []byte) error {
	sh.wmu.Lock()
	defer sh.wmu.Unlock()
	_, err := sh.down.Write(raw)
	return err
}

// responses copies gldap's answers to the gateway, message by message so
// that the shim's own answers never land inside one.
func (sh *shim) responses() {
	defer sh.close()
	r := newFrameReader(sh.up)
	var batch []byte
	for {
		raw, err := readFrame(r, 64<<20)
		if err != nil {
			return
		}
		// gldap flushes every entry; what has already arrived goes on in
		// one write, since each write to the pipe is a hand-over.
		batch = append(batch[:0], raw...)
		for r.Buffered() > 0 && len(batch) < 64<<10 {
			if raw, err = readFrame(r, 64<<20); err != nil {
				break
			}
			batch = append(batch, raw...)
		}
		if sh.writeDown(batch) != nil || err != nil {
			return
		}
	}
}

// requests reads the gateway's requests and acts on each.
func (sh *shim) requests() {
	defer sh.close()
	r := newFrameReader(sh.down)
	for {
		raw, err := readFrame(r, maxFrame)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrClosedPipe) {
				sh.srv.log.Debug("subtree connection ended", "err", err)
			}
			return
		}
		if !sh.handle(raw) {
			return
		}
	}
}

// handle acts on one request and reports whether the connection goes on.
func (sh *shim) handle(raw []byte) bool {
	p, err := ber.DecodePacketErr(raw)
	if err != nil || len(p.Children) < 2 {
		return false
	}
	id, ok := p.Children[0].Value.(int64)
	if !ok {
		return false
	}
	op := p.Children[1]
	if op.ClassType != ber.ClassApplication {
		return false
	}
	switch op.Tag {
	case appSearchRequest:
		if len(op.Children) < 8 {
			return sh.answer(id, appSearchDone, ldap.LDAPResultProtocolError, "", "ldapgate: malformed search request")
		}
		// gldap rebuilds the filter as text and drops the connection when
		// it cannot (extensible matches with :dn:, for one).
		if _, err := ldap.DecompileFilter(op.Children[6]); err != nil {
			return sh.answer(id, appSearchDone, ldap.LDAPResultUnwillingToPerform, "",
				"ldapgate: this filter is not supported in the gateway's subtree")
		}
		_, err := sh.up.Write(raw)
		return err == nil
	case appCompareRequest:
		code, matched, msg := sh.compare(op)
		return sh.answer(id, appCompareResponse, code, matched, msg)
	case appAbandonRequest:
		// Searches here end at once; there is nothing to abandon.
		return true
	case appUnbindRequest:
		return false
	case appBindRequest:
		// The gateway authenticates its clients; a bind here is not theirs.
		return sh.answer(id, appBindResponse, ldap.LDAPResultUnwillingToPerform, "", "ldapgate: bind is not available here")
	case appModifyRequest, appAddRequest, appDelRequest, appModDNRequest, appExtendedRequest:
		return sh.answer(id, int(op.Tag)+1, ldap.LDAPResultUnwillingToPerform, "", "ldapgate: the gateway's own subtree is read-only")
	}
	// Requests that have no response: nothing to say.
	return true
}

// compare answers a compare request from the subtree's entries.
func (sh *shim) compare(op *ber.Packet) (code int, matched, msg string) {
	if len(op.Children) < 2 || len(op.Children[1].Children) < 2 {
		return ldap.LDAPResultProtocolError, "", "ldapgate: malformed compare request"
	}
	dn := op.Children[0].Data.String()
	attr := op.Children[1].Children[0].Data.String()
	value := op.Children[1].Children[1].Data.String()
	e, err := sh.srv.lookup(dn)
	if err != nil {
		var se *searchError
		if errors.As(err, &se) {
			return se.code, se.matchedDN, se.msg
		}
		return ldap.LDAPResultOther, "", "ldapgate: " + err.Error()
	}
	values, ok := e.get(attr)
	if !ok {
		return ldap.LDAPResultNoSuchAttribute, "", ""
	}
	for _, v := range values {
		if compareValues(v, value) == 0 || isDN(v, value) || strings.EqualFold(v, value) {
			return ldap.LDAPResultCompareTrue, "", ""
		}
	}
	return ldap.LDAPResultCompareFalse, "", ""
}

// answer writes an LDAPResult of the shim's own.
func (sh *shim) answer(id int64, tag, code int, matched, msg string) bool {
	return sh.writeDown(encodeResult(id, tag, code, matched, msg)) == nil
}

func encodeResult(id int64, tag, code int, matched, msg string) []byte {
	env := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "LDAPMessage")
	env.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, id, "messageID"))
	res := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ber.Tag(tag), nil, "result")
	res.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(code), "resultCode"))
	res.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, matched, "matchedDN"))
	res.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, msg, "diagnosticMessage"))
	env.AppendChild(res)
	return env.Bytes()
}

func encodeBind(id int64, dn, password string) []byte {
	env := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "LDAPMessage")
	env.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, id, "messageID"))
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, appBindRequest, nil, "bind")
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, int64(3), "version"))
	op.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, dn, "name"))
	op.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 0, password, "simple"))
	env.AppendChild(op)
	return env.Bytes()
}

// peekResult reads the message ID, operation tag and result code of a response.
func peekResult(raw []byte) (id int64, tag int, code int, err error) {
	p, err := ber.DecodePacketErr(raw)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("decode response: %w", err)
	}
	if len(p.Children) < 2 || len(p.Children[1].Children) < 1 {
		return 0, 0, 0, errors.New("malformed response")
	}
	id, _ = p.Children[0].Value.(int64)
	c, _ := p.Children[1].Children[0].Value.(int64)
	return id, int(p.Children[1].Tag), int(c), nil
}

func newFrameReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, 16<<10) }

// readFrame reads one whole BER element (an LDAPMessage) without decoding it.
func readFrame(r *bufio.Reader, limit int) ([]byte, error) {
	tag, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	first, err := r.ReadByte()
	if err != nil {
		return nil, unexpected(err)
	}
	header := []byte{tag, first}
	length := int(first)
	if first&0x80 != 0 {
		n := int(first & 0x7f)
		if n == 0 || n > 4 {
			return nil, fmt.Errorf("unsupported BER length form 0x%02x", first)
		}
		length = 0
		for range n {
			b, err := r.ReadByte()
			if err != nil {
				return nil, unexpected(err)
			}
			header = append(header, b)
			length = length<<8 | int(b)
		}
	}
	if length > limit {
		return nil, fmt.Errorf("message of %d bytes exceeds %d", length, limit)
	}
	buf := make([]byte, len(header)+length)
	copy(buf, header)
	if _, err := io.ReadFull(r, buf[len(header):]); err != nil {
		return nil, unexpected(err)
	}
	return buf, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
