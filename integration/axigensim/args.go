package axigensim

import (
	"errors"
	"strings"
)

// token is one word of a command line.
type token struct {
	text   string // the value, quotes and escapes resolved
	quoted bool   // some part was quoted or escaped: never a keyword
	start  int    // byte offsets of the raw word in the line
	end    int
}

var errUnterminated = errors.New("unterminated quoted value")

// SplitArgs splits a command line into words the way the simulator reads
// them, resolving the three quoting forms of docs/axigen-cli.md: escaped
// (a backslash makes the next character literal), single-quoted (everything
// literal up to the next '), double-quoted (bash-like: \" and \\ are escapes,
// a backslash before anything else stays). Forms may be joined in one word,
// as in a shell. It is exported so that tests can check a quoting rule
// against the simulator's reading without a connection.
func SplitArgs(line string) ([]string, error) {
	toks, err := tokenize(line)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(toks))
	for i, t := range toks {
		out[i] = t.text
	}
	return out, nil
}

func tokenize(line string) ([]token, error) {
	var toks []token
	i := 0
	for {
		for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
		if i >= len(line) {
			return toks, nil
		}
		t := token{start: i}
		var b strings.Builder
		for i < len(line) && line[i] != ' ' && line[i] != '\t' {
			switch c := line[i]; c {
			case '\\':
				t.quoted = true
				if i+1 < len(line) {
					b.WriteByte(line[i+1])
					i += 2
				} else {
					i++
				}
			case '\'':
				t.quoted = true
				j := strings.IndexByte(line[i+1:], '\'')
				if j < 0 {
					return nil, errUnterminated
				}
				b.WriteString(line[i+1 : i+1+j])
				i += j + 2
			case '"':
				t.quoted = true
				i++
				closed := false
				for i < len(line) {
					if line[i] == '"' {
						closed = true
						i++
						break
					}
					if line[i] == '\\' && i+1 < len(line) && (line[i+1] == '"' || line[i+1] == '\\') {
						b.WriteByte(line[i+1])
						i += 2
						continue
					}
					b.WriteByte(line[i])
					i++
				}
				if !closed {
					return nil, errUnterminated
				}
			default:
				b.WriteByte(c)
				i++
			}
		}
		t.end = i
		t.text = b.String()
		toks = append(toks, t)
	}
}

// isKeyword reports whether t is the unquoted keyword kw (case-insensitive).
func (t token) isKeyword(kw string) bool {
	return !t.quoted && strings.EqualFold(t.text, kw)
}

// maskToken renders line with the raw word t replaced by "***".
func maskToken(line string, t token) string {
	return line[:t.start] + "***" + line[t.end:]
}
