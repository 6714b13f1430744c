package ldapwire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

const (
	// BufferSize sizes a Reader's stream buffer: large enough for a burst
	// of pipelined requests or search entries, small enough that thousands
	// of connections stay cheap.
	BufferSize = 16 << 10
	// messageBufferStart is a new Reader's message buffer; it grows (up to
	// the size limit) only for larger messages.
	messageBufferStart = 4 << 10
	// keptMessageBuffer is the largest message buffer Release keeps, so
	// that one big message does not pin its memory for a connection's life.
	keptMessageBuffer = 16 * messageBufferStart
)

// ErrMessageTooLarge is returned by Next for a message whose declared
// length exceeds the Reader's limit. The message is not read.
var ErrMessageTooLarge = errors.New("message exceeds the size limit")

// ProtocolError describes an LDAPMessage that cannot be framed or whose
// envelope is malformed. RFC 4511 section 4.1.1 asks a server to answer it
// with a Notice of Disconnection carrying protocolError.
type ProtocolError struct{ Reason string }

func (e *ProtocolError) Error() string { return "protocol error: " + e.Reason }

func protocolErrorf(format string, args ...any) error {
	return &ProtocolError{Reason: fmt.Sprintf(format, args...)}
}

// Message is one framed LDAPMessage. Raw holds the whole encoding, header
// included, exactly as it came (it is what a relay forwards); the other
// fields are read from its envelope without decoding the rest, and are
// sub-slices of Raw.
type Message struct {
	Raw []byte
	ID  int64
	// Op is the protocolOp's tag and OpContent its content octets.
	Op        byte
	OpContent []byte
	// Controls is the content of the [0] Controls element, or nil.
	Controls []byte
}

// Reader frames LDAPMessages from a stream without decoding them. The
// Message a call to Next returns is valid until the next call: its bytes
// live in a buffer the Reader reuses.
type Reader struct {
	br    *bufio.Reader
	limit int
	buf   []byte
}

// NewReader returns a Reader on r that refuses messages longer than limit.
func NewReader(r io.Reader, limit int) *Reader {
	return NewReaderSize(r, BufferSize, limit)
}

// NewReaderSize is NewReader with a stream buffer of size bytes.
func NewReaderSize(r io.Reader, size, limit int) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, size), limit: limit}
}

// Reset makes the Reader read from r, keeping its buffers (for a pool of
// Readers): what was buffered from the previous stream is dropped.
func (r *Reader) Reset(src io.Reader) {
	r.br.Reset(src)
	r.Release()
}

// Buffered reports how many bytes are already waiting, so that callers can
// delay flushing their writer while more messages are at hand.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// Wait blocks until at least one byte can be read without blocking, or
// the stream fails (a read deadline, for an idle timeout). It consumes
// nothing.
func (r *Reader) Wait() error {
	_, err := r.br.Peek(1)
	return err
}

// Retained reports the capacity of the message buffer the Reader keeps.
func (r *Reader) Retained() int { return cap(r.buf) }

// Release drops a large message buffer so that one big message does not
// pin its memory for the life of a connection.
func (r *Reader) Release() {
	if cap(r.buf) > keptMessageBuffer {
		r.buf = nil
	}
}

// Complete reports whether the next message is wholly buffered, so that
// Next returns it without reading: a server that bounds how long a client
// may take over one message (a stall timeout) arms a timer only when not.
// Bytes that cannot start a message count as complete (Next refuses them
// at once).
func (r *Reader) Complete() bool {
	buffered := r.br.Buffered()
	head, _ := r.br.Peek(min(buffered, 2+maxLengthOctets))
	if len(head) < 2 {
		return len(head) == 1 && head[0] != TagSequence
	}
	if head[0] != TagSequence {
		return true
	}
	first := head[1]
	if first < 0x80 {
		return buffered >= 2+int(first)
	}
	count := int(first & 0x7f)
	if first == 0x80 || count > maxLengthOctets {
		return true
	}
	if len(head) < 2+count {
		return false
	}
	length := 0
	for _, b := range head[2 : 2+count] {
		length = length<<8 | int(b)
	}
	if length < 0 || length > r.limit {
		return true
	}
	return buffered >= 2+count+length
}

// Next reads one message. io.EOF means the stream ended cleanly between
// messages; a *ProtocolError or ErrMessageTooLarge means the stream cannot
// be trusted any further.
func (r *Reader) Next() (Message, error) {
	tag, err := r.br.ReadByte()
	if err != nil {
		return Message{}, err
	}
	if tag != TagSequence {
		return Message{}, protocolErrorf("LDAPMessage must start with a SEQUENCE tag, got 0x%02x", tag)
	}
	var header [1 + 1 + maxLengthOctets]byte
	header[0] = tag
	n := 1
	first, err := r.br.ReadByte()
	if err != nil {
		return Message{}, unexpected(err)
	}
	header[n] = first
	n++
	length := 0
	switch {
	case first < 0x80:
		length = int(first)
	case first == 0x80:
		return Message{}, protocolErrorf("indefinite length is not allowed in LDAP")
	default:
		count := int(first & 0x7f)
		if count > maxLengthOctets {
			return Message{}, protocolErrorf("length of %d octets is out of range", count)
		}
		for range count {
			b, err := r.br.ReadByte()
			if err != nil {
				return Message{}, unexpected(err)
			}
			header[n] = b
			n++
			length = length<<8 | int(b)
		}
	}
	if length < 0 || length > r.limit { // negative: four octets overflowing a 32-bit int
		return Message{}, fmt.Errorf("%w: %d bytes declared, limit %d", ErrMessageTooLarge, length, r.limit)
	}
	total := n + length
	if cap(r.buf) >= total {
		// The fast path: the kept buffer holds the message, no allocation.
		raw := r.buf[:total]
		copy(raw, header[:n])
		if _, err := io.ReadFull(r.br, raw[n:]); err != nil {
			return Message{}, unexpected(err)
		}
		return ParseEnvelope(raw[n:], raw)
	}
	raw, err := r.readGrowing(header[:n], total)
	if err != nil {
		return Message{}, err
	}
	return ParseEnvelope(raw[n:], raw)
}

// readGrowing reads a message larger than the kept buffer, growing the
// buffer as its bytes arrive rather than to the declared length at once:
// a peer that declares a message of the size limit and then stalls holds
// only about twice what it sent, not the limit.
func (r *Reader) readGrowing(header []byte, total int) ([]byte, error) {
	size := min(total, max(2*cap(r.buf), messageBufferStart, len(header)+r.br.Buffered()))
	buf := make([]byte, len(header), size)
	copy(buf, header)
	r.buf = buf
	for len(buf) < total {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(total, 2*cap(buf)))
			copy(grown, buf)
			buf = grown
			r.buf = buf
		}
		got, err := io.ReadFull(r.br, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+got]
		if err != nil {
			return nil, unexpected(err)
		}
	}
	return buf, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ParseEnvelope reads the messageID, the protocolOp's tag and bounds and
// the optional controls of an LDAPMessage whose SEQUENCE content is body;
// raw is the whole message, kept as the result's Raw.
func ParseEnvelope(body, raw []byte) (Message, error) {
	idTag, idContent, rest, err := Next(body)
	if err != nil {
		return Message{}, protocolErrorf("messageID: %v", err)
	}
	if idTag != TagInteger || len(idContent) == 0 || len(idContent) > 4 {
		return Message{}, protocolErrorf("messageID must be an INTEGER of 1 to 4 octets")
	}
	if idContent[0]&0x80 != 0 {
		return Message{}, protocolErrorf("messageID must not be negative")
	}
	var id int64
	for _, b := range idContent {
		id = id<<8 | int64(b)
	}
	opTag, opContent, rest, err := Next(rest)
	if err != nil {
		return Message{}, protocolErrorf("protocolOp: %v", err)
	}
	m := Message{Raw: raw, ID: id, Op: opTag, OpContent: opContent}
	if len(rest) > 0 {
		ctlTag, ctlContent, after, err := Next(rest)
		if err != nil {
			return Message{}, protocolErrorf("controls: %v", err)
		}
		if ctlTag != TagControls || len(after) != 0 {
			return Message{}, protocolErrorf("unexpected element 0x%02x after protocolOp", ctlTag)
		}
		m.Controls = ctlContent
	}
	return m, nil
}

// Parse frames the one whole LDAPMessage in raw.
func Parse(raw []byte) (Message, error) {
	tag, body, rest, err := Next(raw)
	if err != nil {
		return Message{}, protocolErrorf("LDAPMessage: %v", err)
	}
	if tag != TagSequence || len(rest) != 0 {
		return Message{}, protocolErrorf("LDAPMessage must be one SEQUENCE")
	}
	return ParseEnvelope(body, raw)
}
