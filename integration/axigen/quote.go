package axigen

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Command is one CLI command line. It can only be built from keywords and
// quoted values, so a value can never end the line or start another
// command. String gives the line with passwords masked.
type Command struct {
	line   string // as sent, without the line ending
	masked string // for logs, errors and plans
}

// String returns the command with secrets masked: safe to log.
func (c Command) String() string { return c.masked }

// IsZero reports whether c is the zero Command.
func (c Command) IsZero() bool { return c.line == "" }

// Arg is a part of a command: a keyword, a value or a secret value.
type Arg struct {
	text   string
	field  string
	value  bool
	secret bool
}

// Keyword is a literal part of a command, e.g. "UPDATE Account name".
// Keywords are letters, digits and spaces only.
func Keyword(k string) Arg { return Arg{text: k} }

// Value is a value, always sent quoted. field names it in errors.
func Value(field, v string) Arg { return Arg{text: v, field: field, value: true} }

// Secret is a value masked as "***" in String, errors and logs.
func Secret(field, v string) Arg { return Arg{text: v, field: field, value: true, secret: true} }

// NewCommand joins args with single spaces, quoting every value. It refuses
// a value that cannot be represented safely (see CheckValue) and a keyword
// that is not plain letters, digits and spaces.
func NewCommand(args ...Arg) (Command, error) {
	// Every delivery builds several commands: the line is sized once, and
	// the masked line is the line itself unless a value is secret.
	size, secret := 0, false
	for _, a := range args {
		size += len(a.text) + 3 // a blank and the quotes
		secret = secret || a.secret
	}
	var line, masked strings.Builder
	line.Grow(size)
	if secret {
		masked.Grow(size)
	}
	for i, a := range args {
		if i > 0 {
			line.WriteByte(' ')
			if secret {
				masked.WriteByte(' ')
			}
		}
		if !a.value {
			if !isKeyword(a.text) && !isEmptySetKeyword(a.text) {
				return Command{}, &Error{Kind: KindProtocol, Err: errorf("bad keyword %q", a.text)}
			}
			line.WriteString(a.text)
			if secret {
				masked.WriteString(a.text)
			}
			continue
		}
		start := line.Len()
		if err := quoteTo(&line, a.field, a.text); err != nil {
			return Command{}, err
		}
		switch {
		case a.secret:
			masked.WriteString("***")
		case secret:
			masked.WriteString(line.String()[start:])
		}
	}
	if line.Len() == 0 {
		return Command{}, &Error{Kind: KindProtocol, Err: errorf("empty command")}
	}
	c := Command{line: line.String()}
	c.masked = c.line
	if secret {
		c.masked = masked.String()
	}
	return c, nil
}

// mustKeywords builds a command of keywords only; the keywords are constants
// of this package, so a failure is a programming error.
func mustKeywords(k string) Command {
	c, err := NewCommand(Keyword(k))
	if err != nil {
		panic(err)
	}
	return c
}

// isEmptySetKeyword accepts a keyword phrase ending in the empty set "()",
// as in "SET services ()": a literal, never a value.
func isEmptySetKeyword(s string) bool {
	head, ok := strings.CutSuffix(s, " ()")
	return ok && isKeyword(head)
}

func isKeyword(s string) bool {
	if s == "" || s[0] == ' ' || s[len(s)-1] == ' ' {
		return false
	}
	for _, r := range s {
		if !(r == ' ' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// CheckValue reports whether v can be sent as a single-line value. It
// refuses invalid UTF-8 and every character that could end a line or that a
// terminal-style reader might act on: C0 and C1 controls (CR, LF, NUL, TAB,
// ESC, DEL, ...), the Unicode line and paragraph separators, and values
// longer than MaxValueLen. Every other character — quotes, backslashes,
// spaces, any printable Unicode — is sent as is, inside double quotes.
// field names the value in the error.
func CheckValue(field, v string) error {
	if err := checkValue(field, v); err != nil {
		return err
	}
	return nil
}

// MaxValueLen bounds one value in bytes. Longer values are refused rather
// than sent: no Axigen field needs more, and a server's line limit must
// not cut a command in two.
const MaxValueLen = 8192

func checkValue(field, v string) *Error {
	if len(v) > MaxValueLen {
		return unsafeValue(field, "longer than the limit")
	}
	if !utf8.ValidString(v) {
		return unsafeValue(field, "invalid UTF-8")
	}
	for _, r := range v {
		switch {
		case r == '\r' || r == '\n':
			return unsafeValue(field, "line break")
		case r == 0:
			return unsafeValue(field, "NUL character")
		case unicode.IsControl(r):
			return unsafeValue(field, "control character")
		case r == '\u2028' || r == '\u2029':
			return unsafeValue(field, "line or paragraph separator")
		}
	}
	return nil
}

// Quote returns v in the CLI's double-quoted form: '"' and '\' are escaped
// with a backslash and everything else is literal. It fails for a value
// CheckValue refuses.
func Quote(v string) (string, error) {
	q, err := quote("value", v)
	if err != nil {
		return "", err
	}
	return q, nil
}

func quote(field, v string) (string, *Error) {
	var b strings.Builder
	b.Grow(len(v) + 2)
	if err := quoteTo(&b, field, v); err != nil {
		return "", err
	}
	return b.String(), nil
}

// quoteTo writes quote's value to b (nothing when it refuses the value).
func quoteTo(b *strings.Builder, field, v string) *Error {
	if err := checkValue(field, v); err != nil {
		return err
	}
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		if v[i] == '"' || v[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(v[i])
	}
	b.WriteByte('"')
	return nil
}

// loginName renders the administrator's name for USER: bare when it is a
// plain name (the form Axigen's own scripts use), quoted otherwise.
func loginName(name string) (string, *Error) {
	if name == "" {
		return "", unsafeValue("user", "empty name")
	}
	plain := true
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._@-", r)) {
			plain = false
		}
	}
	if plain {
		return name, nil
	}
	return quote("user", name)
}
