// BER, the part LDAP uses (RFC 4511 section 5.1): single-octet tags and
// definite lengths of at most four octets. These functions work on byte
// slices in place, without building a tree of packets, for the paths where
// go-asn1-ber's allocations show: the relay's message envelope and the
// mirror's reads of one entry.

package ldapwire

import (
	"errors"
)

// maxLengthOctets bounds a long-form length: lengths beyond 2^32-1 are
// never legitimate in LDAP.
const maxLengthOctets = 4

// Next splits the first element off data: its tag, its content and what
// follows it.
func Next(data []byte) (tag byte, content, rest []byte, err error) {
	if len(data) < 2 {
		return 0, nil, nil, errors.New("truncated element")
	}
	tag = data[0]
	if tag&0x1f == 0x1f {
		return 0, nil, nil, errors.New("multi-octet tags are not used by LDAP")
	}
	first := data[1]
	pos := 2
	length := 0
	switch {
	case first < 0x80:
		length = int(first)
	case first == 0x80:
		return 0, nil, nil, errors.New("indefinite length")
	default:
		count := int(first & 0x7f)
		if count > maxLengthOctets || len(data) < pos+count {
			return 0, nil, nil, errors.New("bad length")
		}
		for i := 0; i < count; i++ {
			length = length<<8 | int(data[pos+i])
		}
		pos += count
	}
	if length < 0 || length > len(data)-pos { // negative: four octets overflowing a 32-bit int
		return 0, nil, nil, errors.New("length runs past the end of its container")
	}
	return tag, data[pos : pos+length], data[pos+length:], nil
}

// ParseInt decodes the content of a two's complement INTEGER or
// ENUMERATED.
func ParseInt(content []byte) (int64, error) {
	if len(content) == 0 || len(content) > 8 {
		return 0, errors.New("integer of bad size")
	}
	v := int64(int8(content[0]))
	for _, b := range content[1:] {
		v = v<<8 | int64(b)
	}
	return v, nil
}

// AppendTLV appends an element with a definite length.
func AppendTLV(b []byte, tag byte, content []byte) []byte {
	b = AppendLength(append(b, tag), len(content))
	return append(b, content...)
}

// AppendLength appends a definite length in the fewest octets.
func AppendLength(b []byte, n int) []byte {
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

// AppendInt appends an INTEGER or ENUMERATED (by tag) in the fewest
// octets.
func AppendInt(b []byte, tag byte, v int64) []byte {
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
