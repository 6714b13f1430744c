package schema

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"
)

// DecodeUnicodePwd decodes an Active Directory unicodePwd value: the
// password in double quotes, encoded as UTF-16LE (MS-ADTS 3.1.1.3.1.5).
func DecodeUnicodePwd(value []byte) (string, error) {
	if len(value)%2 != 0 {
		return "", errors.New("odd number of bytes, not UTF-16LE")
	}
	units := make([]uint16, len(value)/2)
	for i := range units {
		units[i] = binary.LittleEndian.Uint16(value[2*i:])
	}
	// A lone surrogate would decode to U+FFFD: a silent change, so refuse it.
	for i := 0; i < len(units); i++ {
		u := units[i]
		switch {
		case u >= 0xd800 && u <= 0xdbff && i+1 < len(units) && units[i+1] >= 0xdc00 && units[i+1] <= 0xdfff:
			i++ // a valid pair
		case u >= 0xd800 && u <= 0xdfff:
			return "", fmt.Errorf("unpaired UTF-16 surrogate at unit %d", i)
		}
	}
	s := string(utf16.Decode(units))
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return "", errors.New("not enclosed in double quotes")
	}
	return s[1 : len(s)-1], nil
}

// EncodeUnicodePwd is the inverse of DecodeUnicodePwd: the value a client
// sends AD to set password pw.
func EncodeUnicodePwd(pw string) []byte {
	units := utf16.Encode([]rune(`"` + pw + `"`))
	out := make([]byte, 2*len(units))
	for i, u := range units {
		binary.LittleEndian.PutUint16(out[2*i:], u)
	}
	return out
}

// HashScheme returns the RFC 2307 scheme of a userPassword value such as
// "{SSHA}...", "{CRYPT}..." or "{ARGON2}...", or "" when the value carries
// none and so is the password itself.
func HashScheme(value string) string {
	if len(value) < 3 || value[0] != '{' {
		return ""
	}
	end := strings.IndexByte(value, '}')
	if end < 2 {
		return ""
	}
	for i := 1; i < end; i++ {
		c := value[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return ""
		}
	}
	return value[1:end]
}

// decodePassword turns a password attribute's value into the password
// itself, without judging whether Axigen can take it. ok is false, with a
// reason, when the value is not a plaintext password.
func (m *Mapping) decodePassword(attr string, value []byte) (pw string, ok bool, reason string) {
	if m.canonical(attr) == "unicodepwd" {
		s, err := DecodeUnicodePwd(value)
		if err != nil {
			return "", false, "undecodable unicodePwd: " + err.Error()
		}
		pw = s
	} else {
		pw = string(value)
		if scheme := HashScheme(pw); scheme != "" {
			return "", false, fmt.Sprintf("pre-hashed ({%s})", scheme)
		}
	}
	if pw == "" {
		return "", false, "empty password"
	}
	return pw, true, ""
}

// PlaintextPassword returns the plaintext password carried by value, a
// value of password attribute attr (as written by a client or read from the
// directory). ok is false, with a reason fit for a log or a diagnostic, when
// there is no plaintext to mirror: the value is pre-hashed (any "{SCHEME}"
// prefix, RFC 2307/3112), an undecodable unicodePwd, empty, or one Axigen
// cannot take (see ValidateValue); the reason never contains the password.
// unicodePwd is decoded from UTF-16LE and its enclosing quotes removed.
func (m *Mapping) PlaintextPassword(attr string, value []byte) (pw string, ok bool, reason string) {
	pw, ok, reason = m.decodePassword(attr, value)
	if !ok {
		return "", false, reason
	}
	if err := ValidateValue(FieldPassword, pw); err != nil {
		var ve *ValueError
		errors.As(err, &ve)
		return "", false, ve.Reason
	}
	return pw, true, ""
}

// CheckPassword returns the *ValueError of a plaintext password (as
// PlaintextPassword decodes it) that Axigen cannot take; nil for one it
// can, and for a hashed or undecodable one, which is not mirrored at all.
// The error never contains the password.
func (m *Mapping) CheckPassword(attr string, value []byte) error {
	pw, ok, _ := m.decodePassword(attr, value)
	if !ok {
		return nil
	}
	if err := ValidateValue(FieldPassword, pw); err != nil {
		var ve *ValueError
		if errors.As(err, &ve) {
			ve.Attr = attr
		}
		return err
	}
	return nil
}
