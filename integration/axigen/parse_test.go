package axigen

import (
	"bufio"
	"context"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/ldapgate/ldapgate/schema"
)

func TestParseShow(t *testing.T) {
	lines := []string{
		"",
		"The contact information:",
		`firstName = "John"`,
		`lastName = "O\"Brien \\ Doe"`, // escaped form (the simulator's)
		`nickName = "say "hi" there"`,  // unescaped form: between first and last quote
		`title = "a\b"`,                // a lone backslash stays
		`enabled = yes [default]`,      // unquoted with annotation
		`quota = "10" [inherited]`,     // quoted with annotation
		`Associated LDAP ID = "8f1c"`,  // name with spaces
		`empty = ""`,                   //
		`math = "1 = 1"`,               // separator inside the value
		"",
	}
	want := []Field{
		{"firstName", "John", ""},
		{"lastName", `O"Brien \ Doe`, ""},
		{"nickName", `say "hi" there`, ""},
		{"title", `a\b`, ""},
		{"enabled", "yes", "default"},
		{"quota", "10", "inherited"},
		{"Associated LDAP ID", "8f1c", ""},
		{"empty", "", ""},
		{"math", "1 = 1", ""},
	}
	if got := ParseShow(lines); !slices.Equal(got, want) {
		t.Errorf("ParseShow:\n got %q\nwant %q", got, want)
	}
}

func TestParseList(t *testing.T) {
	cases := []struct {
		name  string
		lines []string
		rows  []string
	}{
		// The shapes real servers print (docs/axigen-cli.md).
		{"accounts, real", []string{"", "The list of accounts:", "", "name", "----", "john", "jane", ""}, []string{"john", "jane"}},
		{"accounts, real, empty", []string{"", "The list of accounts:", "", "name", "----", ""}, nil},
		{"addresses, real", []string{"", "The list of group addresses:", "john@example.com", "jane@example.com", ""}, []string{"john@example.com", "jane@example.com"}},
		{"addresses, real, empty", []string{"", "The list of group addresses:", ""}, nil},
		{"addresses, leading spaces", []string{"", "Addresses:", "   john@example.com", "\tjane@example.com  ", ""}, []string{"john@example.com", "jane@example.com"}},
		{"addresses after an empty line", []string{"", "Addresses:", "", "john@example.com", ""}, []string{"john@example.com"}},
		// Earlier and other shapes.
		{"no leading empty line", []string{"The list of accounts:", "name", "----", "john", "jane.doe", "", "ignored"}, []string{"john", "jane.doe"}},
		{"padded rows", []string{"Title", "name      ", "----------", "john      ", ""}, []string{"john"}},
		{"several columns", []string{"", "Accounts:", "", "name        quota   status", "---------------------------", "john        100     enabled", "  jane.doe    50      disabled", ""}, []string{"john", "jane.doe"}},
		{"no empty line at the end", []string{"t", "h", "---", "a", "b"}, []string{"a", "b"}},
		{"rows that look like status lines", []string{"t", "address", "-------", "+OK: x@y", "-ERR: z@y", ""}, []string{"+OK:", "-ERR:"}},
		{"nothing at all", nil, nil},
		{"only empty lines", []string{"", "", ""}, nil},
	}
	for _, tc := range cases {
		if got := ParseList(tc.lines).Rows; !slices.Equal(got, tc.rows) {
			t.Errorf("%s: rows %q, want %q", tc.name, got, tc.rows)
		}
	}
}

func TestParsePrompt(t *testing.T) {
	cases := map[string]string{"<#> ": "", "<domain#> ": "domain", "<domain-account-contactInfo#> ": "domain-account-contactInfo", "<login> ": "login", "<password> ": "password"}
	for in, want := range cases {
		if got, ok := parsePrompt(in); !ok || got != want {
			t.Errorf("parsePrompt(%q) = %q, %v", in, got, ok)
		}
	}
	for _, in := range []string{"<#>", "<a b#> ", "<#>  ", "#> ", "<other> "} {
		if _, ok := parsePrompt(in); ok {
			t.Errorf("parsePrompt(%q) accepted", in)
		}
	}
}

// scripted serves one connection from a script: the first reply is sent on
// connect, each later one after the client's next line, which must equal
// the expected line.
func scripted(t *testing.T, banner string, steps [][2]string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		c.Write([]byte(banner))
		for _, st := range steps {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if got := strings.TrimRight(line, "\r\n"); got != st[0] {
				c.Write([]byte("-ERR: unexpected " + got + "\r\n"))
				return
			}
			c.Write([]byte(st[1]))
		}
		r.ReadString('\n') // EXIT, or the end
	}()
	return ln.Addr().String()
}

// TestToleratesUnconfirmedForms talks to a server that uses the forms the
// document leaves open differently from the simulator: "+OK" before the
// password prompt, SHOW values not escaped, a LIST with several columns.
func TestToleratesUnconfirmedForms(t *testing.T) {
	addr := scripted(t, "Welcome to AXIGEN's Command Line Interface\r\nYou must login first.\r\n<login> ", [][2]string{
		{"USER admin", "+OK: Enter password\r\n<password> "},
		{"pw", "+OK: Authentication successful\r\n<#> "},
		{`UPDATE Domain name "example.com"`, "+OK: command successful\r\n<domain#> "},
		{`LIST Accounts "john"`, "The list of accounts:\r\nname        quota\r\n------------------\r\njohn        100\r\n\r\n+OK: command successful\r\n<domain#> "},
		{`UPDATE Account name "john"`, "+OK: command successful\r\n<domain-account#> "},
		{`SHOW RegistryInformation`, "\r\nThe registry information:\r\nAssociated LDAP ID = \"abc\" [synced]\r\n\r\n+OK: command successful\r\n<domain-account#> "},
		{`CONFIG ContactInfo`, "+OK: command successful\r\n<domain-account-contactInfo#> "},
		{`SHOW`, "\r\nContact:\r\nfirstName = \"say \"hi\"\"\r\nlastName = \"Doe\"\r\n\r\n+OK: command successful\r\n<domain-account-contactInfo#> "},
		{`BACK`, "+OK: back\r\n<domain-account#> "},
		{`BACK`, "+OK: back\r\n<domain#> "},
		{`BACK`, "+OK: back\r\n<#> "},
	})
	pool := NewPool(Config{Addr: addr, User: "admin", Password: "pw"}, 1)
	defer pool.Close()
	c := NewClient(pool)
	st, found, err := c.ReadAccount(testCtx(t), "example.com", "john")
	if err != nil || !found {
		t.Fatalf("read: %v %v", found, err)
	}
	if st.LDAPID != "abc" || st.Contact["firstName"] != `say "hi"` || st.Contact["lastName"] != "Doe" || len(st.Contact) != 2 {
		t.Errorf("read %+v", st)
	}
}

// TestOutputThatLooksLikeProtocol: member addresses and values shaped like
// status lines or prompts are read as data, not as the end of the answer.
func TestOutputThatLooksLikeProtocol(t *testing.T) {
	e := newEnv(t, 1)
	ctx := testCtx(t)
	members := []string{"+OK:a@example.com", "-ERR:b@example.com", "<#>c@example.com", "<domain#>"}
	if _, err := e.client.ApplyGroup(ctx, testDomain, schema.Group{Name: "team", Members: members}, ""); err != nil {
		t.Fatal(err)
	}
	g, _, err := e.client.ReadGroup(ctx, testDomain, "team")
	want := append([]string(nil), members...)
	slices.Sort(want)
	if err != nil || !slices.Equal(g.Members, want) {
		t.Fatalf("members %q, %v; want %q", g.Members, err, want)
	}
	a := schema.Account{Name: "john", Contact: map[string]string{"firstName": "+OK: x", "lastName": "<#> ", "nickName": "-ERR: y"}}
	if _, err := e.client.ApplyAccount(ctx, testDomain, a, ""); err != nil {
		t.Fatal(err)
	}
	if p, err := e.client.ApplyAccount(ctx, testDomain, a, ""); err != nil || !p.Empty() {
		t.Fatalf("second apply: %v %v", p, err)
	}
}

// TestReadAnswerLines: a status line followed by more output is output,
// kept in its place among the lines; the last status line is the status;
// lines keep their blanks and lose only their endings.
func TestReadAnswerLines(t *testing.T) {
	for _, c := range []struct {
		in     string
		lines  []string
		status string
		ok     bool
	}{
		{"a\r\n+OK: x\r\n b \r\n-ERR: done\r\n<#> ", []string{"a", "+OK: x", " b "}, "done", false},
		{"+OK: one\r\n+OK: two\r\n<domain#> ", []string{"+OK: one"}, "two", true},
		{"+OK\n<#> ", nil, "", true},
		{"\r\n\r\n+OK: x\r\n<#> ", []string{"", ""}, "x", true},
	} {
		s := &Session{r: bufio.NewReader(strings.NewReader(c.in))}
		ans, err := s.readAnswer(context.Background(), "X", false, false)
		if err != nil || !slices.Equal(ans.Lines, c.lines) || ans.Status != c.status || ans.OK != c.ok {
			t.Errorf("%q: lines %q status %q ok %v, %v; want %q %q %v", c.in, ans.Lines, ans.Status, ans.OK, err, c.lines, c.status, c.ok)
		}
	}
}
