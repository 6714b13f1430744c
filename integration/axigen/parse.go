package axigen

import (
	"strings"
)

// Field is one "name = value" line of a SHOW answer.
type Field struct {
	Name  string
	Value string
	// Annotation is the bracketed note some values carry, without the
	// brackets ("" when none).
	Annotation string
}

// ParseShow reads the "name = value" lines of a SHOW answer. The separator
// is exactly " = "; other lines (the empty lines, the title) are skipped.
// Double-quoted values are unquoted: '\"' and '\\' are read as escapes
// when the closing quote then ends the value (the simulator's form); when
// it does not, the value is taken literally between the first and the last
// quote (a server that does not escape). A trailing "[...]" is the
// annotation.
func ParseShow(lines []string) []Field {
	out := make([]Field, 0, len(lines))
	for _, l := range lines {
		i := strings.Index(l, " = ")
		if i <= 0 || strings.HasPrefix(l, " ") {
			continue
		}
		name, raw := l[:i], l[i+3:]
		f := Field{Name: name}
		f.Value, f.Annotation = parseShowValue(raw)
		out = append(out, f)
	}
	return out
}

func parseShowValue(raw string) (value, annotation string) {
	if strings.HasPrefix(raw, `"`) {
		if v, rest, ok := unescapeQuoted(raw); ok {
			if a, ok := annotationOf(rest); ok {
				return v, a
			}
		}
		// Not the escaped form: take the text between the first quote and
		// the last one, before any annotation.
		body, a := raw, ""
		if j := strings.LastIndex(raw, `"`); j > 0 {
			body = raw[1:j]
			if an, ok := annotationOf(raw[j+1:]); ok {
				a = an
			}
		} else {
			body = raw[1:]
		}
		return body, a
	}
	// Unquoted value, maybe followed by " [note]".
	if strings.HasSuffix(raw, "]") {
		if j := strings.LastIndex(raw, " ["); j >= 0 {
			return raw[:j], raw[j+2 : len(raw)-1]
		}
	}
	return raw, ""
}

// unescapeQuoted reads a double-quoted value with '\"' and '\\' escapes at
// the start of raw, returning it and what follows the closing quote.
func unescapeQuoted(raw string) (string, string, bool) {
	// Most values hold no escape: they are the text up to the next quote,
	// taken without a copy (an account's reads parse a score of them).
	if k := strings.IndexAny(raw[1:], `"\`); k >= 0 && raw[1+k] == '"' {
		return raw[1 : 1+k], raw[2+k:], true
	}
	var b strings.Builder
	for i := 1; i < len(raw); i++ {
		switch raw[i] {
		case '\\':
			if i+1 < len(raw) && (raw[i+1] == '"' || raw[i+1] == '\\') {
				b.WriteByte(raw[i+1])
				i++
				continue
			}
			b.WriteByte('\\')
		case '"':
			return b.String(), raw[i+1:], true
		default:
			b.WriteByte(raw[i])
		}
	}
	return "", "", false
}

// annotationOf accepts "" or " [note]" (spaces tolerated).
func annotationOf(rest string) (string, bool) {
	rest = strings.TrimSpace(rest)
	if rest == "" {
		return "", true
	}
	if strings.HasPrefix(rest, "[") && strings.HasSuffix(rest, "]") {
		return rest[1 : len(rest)-1], true
	}
	return "", false
}

// showValue returns the value of the named field (case-insensitive).
func showValue(fields []Field, name string) (string, bool) {
	for _, f := range fields {
		if strings.EqualFold(f.Name, name) {
			return f.Value, true
		}
	}
	return "", false
}

// Listing is a parsed LIST answer.
type Listing struct {
	Title string
	// Columns are the header's words; nil for a list without a header
	// (LIST Addresses on a real server).
	Columns []string
	// Rows holds one entry per item: the first whitespace-separated token
	// of its row (Axigen names and addresses hold no blanks).
	Rows []string
}

// ParseList reads a LIST answer by its structure, in either of the shapes
// real servers print (docs/axigen-cli.md):
//
//	(empty) title (empty) header dashes rows... (empty)   LIST Accounts, Groups
//	(empty) title rows... (empty)                        LIST Addresses
//
// Leading blanks of rows are ignored, an empty list is a title alone, and
// rows end at the first empty line after them. An answer with no lines
// at all is taken as an empty list too: no public source shows what a real
// server prints for one.
func ParseList(lines []string) Listing {
	i := skipEmpty(lines, 0)
	if i == len(lines) {
		return Listing{}
	}
	out := Listing{Title: strings.TrimSpace(lines[i])}
	i++
	// A dashed line before the first empty-line-terminated block ends
	// marks a header: the line above it.
	if d := dashedLine(lines, i); d >= 0 {
		if d > i {
			out.Columns = strings.Fields(lines[d-1])
		}
		i = d + 1
	} else if i < len(lines) && strings.TrimSpace(lines[i]) == "" {
		// "title, empty line, rows": tolerated, though unseen.
		i = skipEmpty(lines, i)
	}
	for ; i < len(lines); i++ {
		f := strings.Fields(lines[i])
		if len(f) == 0 {
			break
		}
		out.Rows = append(out.Rows, f[0])
	}
	return out
}

// dashedLine finds the line of dashes under a header: within the two lines
// after the title's block (an optional empty line, the header), not past
// the rows.
func dashedLine(lines []string, from int) int {
	for i := from; i < len(lines) && i <= from+2; i++ {
		if isDashes(lines[i]) {
			return i
		}
	}
	return -1
}

func skipEmpty(lines []string, i int) int {
	for i < len(lines) && strings.TrimSpace(lines[i]) == "" {
		i++
	}
	return i
}

func isDashes(l string) bool {
	t := strings.TrimSpace(l)
	if len(t) < 3 {
		return false
	}
	for i := 0; i < len(t); i++ {
		if t[i] != '-' && t[i] != ' ' && t[i] != '+' {
			return false
		}
	}
	return strings.Count(t, "-") >= 3
}
