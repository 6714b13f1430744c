package ldapwire

import (
	"bytes"
	"math"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 70_000, 0xffffff, 0x1000000} {
		content := bytes.Repeat([]byte{'x'}, n)
		enc := AppendTLV([]byte{0xaa}, 0x04, content)
		tag, got, rest, err := Next(enc[1:])
		if err != nil || tag != 0x04 || !bytes.Equal(got, content) || len(rest) != 0 {
			t.Errorf("length %d: tag %#x, %d bytes, %d left, %v", n, tag, len(got), len(rest), err)
		}
	}
	for _, v := range []int64{0, 1, -1, 127, 128, -128, -129, 255, 256, 65535, 1 << 30, 1 << 31, math.MaxInt64, math.MinInt64} {
		tag, content, _, err := Next(AppendInt(nil, 0x0a, v))
		got, perr := ParseInt(content)
		if err != nil || perr != nil || tag != 0x0a || got != v {
			t.Errorf("int %d: got %d (%v, %v)", v, got, err, perr)
		}
	}
}

func TestNextRefuses(t *testing.T) {
	for name, data := range map[string][]byte{
		"empty":              nil,
		"one octet":          {0x04},
		"multi-octet tag":    {0x1f, 0x01, 0x00},
		"indefinite length":  {0x30, 0x80, 0x00, 0x00},
		"five length octets": {0x04, 0x85, 0, 0, 0, 0, 1, 'x'},
		"length octets cut":  {0x04, 0x82, 0x01},
		"past the end":       {0x04, 0x05, 'a', 'b'},
		"huge length":        {0x04, 0x84, 0xff, 0xff, 0xff, 0xff, 'a'},
	} {
		if _, _, _, err := Next(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for name, content := range map[string][]byte{"empty": nil, "nine octets": make([]byte, 9)} {
		if _, err := ParseInt(content); err == nil {
			t.Errorf("integer %s: accepted", name)
		}
	}
}
