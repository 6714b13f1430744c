package gateway

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/ldapgate/ldapgate/internal/ber"
)

// LDAP protocolOp tags (RFC 4511 section 4.2 onwards), as the single
// identifier octet they have on the wire: class APPLICATION, constructed or
// primitive, tag number.
const (
	tagBindRequest      = 0x60
	tagBindResponse     = 0x61
	tagUnbindRequest    = 0x42
	tagSearchRequest    = 0x63
	tagSearchEntry      = 0x64
	tagSearchDone       = 0x65
	tagSearchReference  = 0x73
	tagModifyRequest    = 0x66
	tagModifyResponse   = 0x67
	tagAddRequest       = 0x68
	tagAddResponse      = 0x69
	tagDelRequest       = 0x4a
	tagDelResponse      = 0x6b
	tagModDNRequest     = 0x6c
	tagModDNResponse    = 0x6d
	tagCompareRequest   = 0x6e
	tagCompareResponse  = 0x6f
	tagAbandonRequest   = 0x50
	tagExtendedRequest  = 0x77
	tagExtendedResponse = 0x78
	tagIntermediate     = 0x79
	tagControls         = 0xa0
	berTagSequence      = 0x30
	berTagInteger       = 0x02
	berTagOctetString   = 0x04
	berTagEnumerated    = 0x0a
	berTagBoolean       = 0x01
	maxLengthOctets     = 4 // lengths beyond 2^32-1 are never legitimate here
	// ioBufferSize sizes the buffered readers and writers of each connection:
	// large enough for a burst of pipelined requests or search entries, small
	// enough that thousands of connections stay cheap.
	ioBufferSize = 16 << 10
	// messageBufferStart is a new reader's message buffer; it grows (up to the
	// message size limit) only for larger messages.
	messageBufferStart = 4 << 10
)

// responseTag gives the response protocolOp that answers a request, or 0 for
// requests that get no response (unbind, abandon).
func responseTag(requestTag byte) byte {
	switch requestTag {
	case tagBindRequest:
		return tagBindResponse
	case tagSearchRequest:
		return tagSearchDone
	case tagModifyRequest:
		return tagModifyResponse
	case tagAddRequest:
		return tagAddResponse
	case tagDelRequest:
		return tagDelResponse
	case tagModDNRequest:
		return tagModDNResponse
	case tagCompareRequest:
		return tagCompareResponse
	case tagExtendedRequest:
		return tagExtendedResponse
	}
	return 0
}

// opName names a protocolOp for logs and diagnostics.
func opName(tag byte) string {
	switch tag {
	case tagBindRequest:
		return "bind"
	case tagUnbindRequest:
		return "unbind"
	case tagSearchRequest:
		return "search"
	case tagModifyRequest:
		return "modify"
	case tagAddRequest:
		return "add"
	case tagDelRequest:
		return "delete"
	case tagModDNRequest:
		return "modifyDN"
	case tagCompareRequest:
		return "compare"
	case tagAbandonRequest:
		return "abandon"
	case tagExtendedRequest:
		return "extended"
	}
	return fmt.Sprintf("op 0x%02x", tag)
}

// isRequestTag reports whether a client may send tag as its protocolOp.
func isRequestTag(tag byte) bool {
	switch tag {
	case tagBindRequest, tagUnbindRequest, tagSearchRequest, tagModifyRequest,
		tagAddRequest, tagDelRequest, tagModDNRequest, tagCompareRequest,
		tagAbandonRequest, tagExtendedRequest:
		return true
	}
	return false
}

// isFinalResponse reports whether a response protocolOp ends its operation.
// Search entries, references and intermediate responses do not.
func isFinalResponse(tag byte) bool {
	switch tag {
	case tagSearchEntry, tagSearchReference, tagIntermediate:
		return false
	}
	return true
}

// ErrMessageTooLarge is returned by the reader for a message whose declared
// length exceeds the configured limit. The message is not read.
var ErrMessageTooLarge = errors.New("message exceeds the size limit")

// ProtocolError describes an LDAPMessage that cannot be framed or whose
// envelope is malformed. RFC 4511 section 4.1.1 asks the server to answer it
// with a Notice of Disconnection carrying protocolError.
type ProtocolError struct{ Reason string }

func (e *ProtocolError) Error() string { return "protocol error: " + e.Reason }

func protocolErrorf(format string, args ...any) error {
	return &ProtocolError{Reason: fmt.Sprintf(format, args...)}
}

// message is one framed LDAPMessage. raw holds the whole encoding (header
// included) and is what gets forwarded; the other fields are read from its
// envelope without decoding the rest.
type message struct {
	raw []byte
	id  int64
	op  byte
	// opContent is the protocolOp's content octets (a sub-slice of raw).
	opContent []byte
	// controls is the content of the [0] Controls element, or nil.
	controls []byte
}

// messageReader frames LDAPMessages from a stream without decoding them.
// The slice a call returns is valid until the next call.
type messageReader struct {
	r     *bufio.Reader
	limit int
	buf   []byte
}

func newMessageReader(r io.Reader, limit int) *messageReader {
	return &messageReader{r: bufio.NewReaderSize(r, ioBufferSize), limit: limit}
}

// buffered reports how many bytes are already waiting, so callers can delay
// flushing their writer while more messages are at hand.
func (mr *messageReader) buffered() int { return mr.r.Buffered() }

// next reads one message. io.EOF means the stream ended cleanly between
// messages; a *ProtocolError or ErrMessageTooLarge means the stream cannot
// be trusted any further.
func (mr *messageReader) next() (message, error) {
	tag, err := mr.r.ReadByte()
	if err != nil {
		return message{}, err
	}
	if tag != berTagSequence {
		return message{}, protocolErrorf("LDAPMessage must start with a SEQUENCE tag, got 0x%02x", tag)
	}
	var header [1 + 1 + maxLengthOctets]byte
	header[0] = tag
	n := 1
	first, err := mr.r.ReadByte()
	if err != nil {
		return message{}, unexpected(err)
	}
	header[n] = first
	n++
	length := 0
	switch {
	case first < 0x80:
		length = int(first)
	case first == 0x80:
		return message{}, protocolErrorf("indefinite length is not allowed in LDAP")
	default:
		count := int(first & 0x7f)
		if count > maxLengthOctets {
			return message{}, protocolErrorf("length of %d octets is out of range", count)
		}
		for i := 0; i < count; i++ {
			b, err := mr.r.ReadByte()
			if err != nil {
				return message{}, unexpected(err)
			}
			header[n] = b
			n++
			length = length<<8 | int(b)
		}
	}
	if length > mr.limit {
		return message{}, fmt.Errorf("%w: %d bytes declared, limit %d", ErrMessageTooLarge, length, mr.limit)
	}
	total := n + length
	if cap(mr.buf) < total {
		// Grow geometrically, but never past what the limit allows.
		mr.buf = make([]byte, total, min(max(total, 2*cap(mr.buf), messageBufferStart), mr.limit+16))
	}
	raw := mr.buf[:total]
	copy(raw, header[:n])
	if _, err := io.ReadFull(mr.r, raw[n:]); err != nil {
		return message{}, unexpected(err)
	}
	m, err := parseEnvelope(raw, raw[n:])
	if err != nil {
		return message{}, err
	}
	return m, nil
}

// release drops a large buffer so one big message does not pin its memory
// for the life of a connection.
func (mr *messageReader) release() {
	if cap(mr.buf) > 16*messageBufferStart {
		mr.buf = nil
	}
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseEnvelope reads the messageID, the protocolOp tag and bounds, and the
// optional controls of an LDAPMessage whose SEQUENCE content is body.
func parseEnvelope(raw, body []byte) (message, error) {
	idTag, idContent, rest, err := ber.Next(body)
	if err != nil {
		return message{}, protocolErrorf("messageID: %v", err)
	}
	if idTag != berTagInteger || len(idContent) == 0 || len(idContent) > 4 {
		return message{}, protocolErrorf("messageID must be an INTEGER of 1 to 4 octets")
	}
	if idContent[0]&0x80 != 0 {
		return message{}, protocolErrorf("messageID must not be negative")
	}
	var id int64
	for _, b := range idContent {
		id = id<<8 | int64(b)
	}
	opTag, opContent, rest, err := ber.Next(rest)
	if err != nil {
		return message{}, protocolErrorf("protocolOp: %v", err)
	}
	m := message{raw: raw, id: id, op: opTag, opContent: opContent}
	if len(rest) > 0 {
		ctlTag, ctlContent, after, err := ber.Next(rest)
		if err != nil {
			return message{}, protocolErrorf("controls: %v", err)
		}
		if ctlTag != tagControls || len(after) != 0 {
			return message{}, protocolErrorf("unexpected element 0x%02x after protocolOp", ctlTag)
		}
		m.controls = ctlContent
	}
	return m, nil
}
