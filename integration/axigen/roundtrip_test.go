package axigen

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/schema"
)

// alphabet mixes what quoting must get right: quotes, backslashes,
// spaces, keywords, characters that look like prompts or status lines, and
// Unicode (accents, CJK, emoji with joiners, right-to-left text).
var alphabet = []string{
	`"`, `'`, `\`, ` `, `  `, `\"`, `\\`, `""`, `''`, "a", "Z", "0", "=", " = ", "<", ">", "<#> ",
	"+OK: ", "-ERR: ", "#", "-", "*", "?", "[", "]", "$HOME", "`id`", ";", "&", "|", "%", "~",
	"é", "ß", "Ω", "中文", "😀", "👨\u200d👩\u200d👧", "\u00a0", "שלום", "\u200b",
	"password", "SET", "COMMIT", "REMOVE Account name", "name",
}

func randomValue(r *rand.Rand) string {
	var b strings.Builder
	for n := r.IntN(12); n > 0; n-- {
		b.WriteString(alphabet[r.IntN(len(alphabet))])
	}
	return b.String()
}

// randomName is randomValue without blanks, which names cannot hold.
func randomName(r *rand.Rand) string {
	return strings.Join(strings.FieldsFunc(randomValue(r), unicode.IsSpace), "")
}

// TestQuoteReadBySimulator: the client's quoting of any printable value is
// read back by the simulator's command parser as exactly one word with the
// value unchanged, and a refused value is one with a character that cannot
// travel in a line.
func TestQuoteReadBySimulator(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		v := randomValue(r)
		q, err := Quote(v)
		if err != nil {
			t.Fatalf("Quote(%q): %v", v, err)
		}
		words, err := axigensim.SplitArgs("SET firstName " + q)
		if err != nil || len(words) != 3 || words[2] != v {
			t.Fatalf("Quote(%q) = %s, read back as %q (%v)", v, q, words, err)
		}
	}
	if _, err := Quote(strings.Repeat("é", MaxValueLen/2)); err != nil {
		t.Errorf("a value of MaxValueLen bytes refused: %v", err)
	}
	if _, err := Quote(strings.Repeat("a", MaxValueLen+1)); KindOf(err) != KindUnsafeValue {
		t.Errorf("a value over MaxValueLen: %v", err)
	}
}

// FuzzQuote: for any string, Quote either refuses it (and then it holds a
// character that cannot be sent in one line) or returns a single line that
// the simulator reads back as exactly the value.
func FuzzQuote(f *testing.F) {
	for _, s := range []string{"", "john", `a"b`, `a\b`, "x\r\nREMOVE Account name \"victim\"", "nul\x00", "tab\t", "é中😀", "\u2028", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		q, err := Quote(v)
		if err != nil {
			if !errors.Is(err, ErrUnsafeValue) || KindOf(err) != KindUnsafeValue || IsTemporary(err) {
				t.Fatalf("Quote(%q) error %v is not a permanent unsafe-value error", v, err)
			}
			if len(v) <= MaxValueLen && utf8.ValidString(v) && !strings.ContainsFunc(v, func(r rune) bool {
				return r < 0x20 || r >= 0x7f && r < 0xa0 || r == '\u2028' || r == '\u2029'
			}) {
				t.Fatalf("Quote refused the printable value %q: %v", v, err)
			}
			return
		}
		if strings.ContainsAny(q, "\r\n\x00") {
			t.Fatalf("Quote(%q) = %q holds a line break or NUL", v, q)
		}
		words, err := axigensim.SplitArgs("SET firstName " + q)
		if err != nil || len(words) != 3 || words[2] != v {
			t.Fatalf("Quote(%q) = %s, read back as %q (%v)", v, q, words, err)
		}
	})
}

// TestRoundTripThroughSimulator: values set through the client (contact
// fields, account and group names, member addresses, passwords) are held
// unchanged by the simulator and read back unchanged by the client.
func TestRoundTripThroughSimulator(t *testing.T) {
	e := newEnv(t, 2)
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 150 {
		name := "u" + randomName(r) + "x" // names are the first word of LIST rows
		a := schema.Account{Name: name, Password: "p" + randomValue(r), Contact: managed(nil)}
		for _, f := range schema.ContactFields {
			if v := randomValue(r); v != "" {
				a.Contact[f] = v
			}
		}
		if _, err := e.client.ApplyAccount(ctx, testDomain, a, ""); err != nil {
			t.Fatalf("apply %q: %v", name, err)
		}
		held, ok := e.sim.Account(testDomain, name)
		if !ok || held.Name != name || held.Password != a.Password || !mapsEqual(held.Contact, a.Contact) {
			t.Fatalf("simulator holds %+v for %+v", held, a)
		}
		st, found, err := e.client.ReadAccount(ctx, testDomain, name)
		if err != nil || !found || st.Name != name || !mapsEqual(st.Contact, a.Contact) {
			t.Fatalf("read back %+v, %v, %v; want %+v", st, found, err, a)
		}
		p, err := e.client.ApplyAccount(ctx, testDomain, withoutPassword(a), "")
		if err != nil || !p.Empty() {
			t.Fatalf("second apply of %q: %v, %v", name, p.Lines(), err)
		}

		g := schema.Group{Name: "g" + randomName(r) + "x"}
		for range r.IntN(4) {
			g.Members = append(g.Members, "m"+randomName(r)+"@example.com")
		}
		if _, err := e.client.ApplyGroup(ctx, testDomain, g, ""); err != nil {
			t.Fatalf("apply group %q (iteration %d): %v", g.Name, i, err)
		}
		gs, found, err := e.client.ReadGroup(ctx, testDomain, g.Name)
		want := dedupFold(g.Members)
		if err != nil || !found || gs.Name != g.Name || !slices.Equal(gs.Members, want) {
			t.Fatalf("read group back %+v, %v, %v; want %q %q", gs, found, err, g.Name, want)
		}
	}
}

// mapsEqual compares contacts, a missing field being an empty one.
func mapsEqual(a, b map[string]string) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

func dedupFold(in []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, m := range in {
		if !seen[strings.ToLower(m)] {
			seen[strings.ToLower(m)] = true
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return out
}
