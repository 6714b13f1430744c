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
	var out []Field
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
	Title   string
	Columns []string
	// Rows holds one entry per item: its first column's text. Column
	// headers are unconfirmed, so the first column is taken to be the
	// item's name; when the header names one column, the whole row
	// (trailing spaces trimmed) is the name.
	Rows []string
}

// ParseList reads a LIST answer: a title, a header row, a line of dashes,
// then rows until the first empty line (or the end). It reports false when
// there is no dashed line.
func ParseList(lines []string) (Listing, bool) {
	dash := -1
	for i, l := range lines {
		if isDashes(l) {
			dash = i
			break
		}
	}
	if dash < 0 {
		return Listing{}, false
	}
	var out Listing
	header := ""
	if dash >= 1 {
		header = lines[dash-1]
		out.Columns = strings.Fields(header)
	}
	for i := dash - 2; i >= 0; i-- {
		if strings.TrimSpace(lines[i]) != "" {
			out.Title = lines[i]
			break
		}
	}
	// Where the second column starts, from the header, when there is one.
	cut := -1
	if len(out.Columns) > 1 {
		cut = columnStart(header, 1)
	}
	for _, l := range lines[dash+1:] {
		if l == "" {
			break
		}
		row := l
		if cut > 0 && len(row) > cut {
			row = row[:cut]
		}
		row = strings.TrimRight(row, " \t")
		if row == "" {
			continue
		}
		out.Rows = append(out.Rows, row)
	}
	return out, true
}

// columnStart returns the byte offset where the n-th (from 0) word of header
// begins.
func columnStart(header string, n int) int {
	inWord := false
	count := -1
	for i := 0; i < len(header); i++ {
		space := header[i] == ' ' || header[i] == '\t'
		if !space && !inWord {
			count++
			if count == n {
				return i
			}
		}
		inWord = !space
	}
	return -1
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
