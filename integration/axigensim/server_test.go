package axigensim

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

const (
	domain  = "example.com"
	adminPW = "s3cret-admin"
)

func start(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.Admins == nil {
		opts.Admins = map[string]string{"admin": adminPW}
	}
	if opts.Domains == nil {
		opts.Domains = []string{domain}
	}
	s := New(opts)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// raw is a bare line client: it shows exactly what the server sends.
type raw struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, s *Server) *raw {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { conn.Close() })
	return &raw{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// until reads until what was read ends with suffix, and returns it all.
func (c *raw) until(suffix string) string {
	c.t.Helper()
	var b strings.Builder
	for !strings.HasSuffix(b.String(), suffix) {
		x, err := c.r.ReadByte()
		if err != nil {
			c.t.Fatalf("waiting for %q after %q: %v", suffix, b.String(), err)
		}
		b.WriteByte(x)
	}
	return b.String()
}

func (c *raw) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		c.t.Fatal(err)
	}
}

// do sends line and returns the answer up to and including prompt, which
// must be the whole rest of what the server sent.
func (c *raw) do(line, prompt string) string {
	c.t.Helper()
	c.send(line)
	ans := c.until(prompt)
	if c.r.Buffered() > 0 {
		c.t.Fatalf("%q: bytes after the prompt", line)
	}
	return ans
}

func (c *raw) login() {
	c.t.Helper()
	c.until("<login> ")
	c.do("USER admin", "<password> ")
	c.do(adminPW, "<#> ")
}

// eof reports whether the server closed the connection.
func (c *raw) eof() bool {
	_, err := c.r.ReadByte()
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || err != nil && strings.Contains(err.Error(), "reset")
}

func TestBannerAndLoginExactBytes(t *testing.T) {
	s := start(t, Options{})
	c := dial(t, s)
	if got := c.until("<login> "); got != "Welcome to AXIGEN's Command Line Interface\r\n<login> " {
		t.Fatalf("banner %q", got)
	}
	if got := c.do("USER admin", "<password> "); got != "<password> " {
		t.Fatalf("after USER: %q", got)
	}
	if got := c.do(adminPW, "<#> "); got != "+OK: Authentication successful\r\n<#> " {
		t.Fatalf("after password: %q", got)
	}
	if got := c.do("EXIT", "have a nice day\r\n"); got != "+OK: have a nice day\r\n" {
		t.Fatalf("farewell %q", got)
	}
	if !c.eof() {
		t.Error("connection still open after EXIT")
	}
}

func TestBeforeLogin(t *testing.T) {
	s := start(t, Options{})
	c := dial(t, s)
	c.until("<login> ")
	if got := c.do("GET VERSION", "<login> "); got != "10.6.30|Linux|x86_64\r\n+OK: command successful\r\n<login> " {
		t.Errorf("GET VERSION: %q", got)
	}
	if got := c.do(`UPDATE Domain name "example.com"`, "<login> "); !strings.HasPrefix(got, "-ERR: ") {
		t.Errorf("command before login: %q", got)
	}
}

// TestMaxErrors: a logged-in session's MaxErrors-th -ERR closes it after
// that answer; answers that succeed do not count.
func TestMaxErrors(t *testing.T) {
	s := start(t, Options{MaxErrors: 2})
	c := dial(t, s)
	c.login()
	if got := c.do("NO SUCH COMMAND", "<#> "); !strings.HasPrefix(got, "-ERR: ") {
		t.Fatalf("first wrong command: %q", got)
	}
	c.do(`UPDATE Domain name "example.com"`, "<domain#> ")
	c.send(`UPDATE Account name "nobody"`)
	if got := c.until("\r\n"); !strings.HasPrefix(got, "-ERR: ") {
		t.Fatalf("second wrong command: %q", got)
	}
	if !c.eof() {
		t.Fatal("connection open after maxErrors wrong commands")
	}
}

// TestMaxAuthErrors: each wrong password is -ERR and the login prompt; the
// MaxAuthErrors-th closes the connection after its -ERR.
func TestMaxAuthErrors(t *testing.T) {
	s := start(t, Options{MaxAuthErrors: 3})
	c := dial(t, s)
	c.until("<login> ")
	for i := 1; i <= 3; i++ {
		c.do("USER admin", "<password> ")
		if i < 3 {
			if got := c.do("wrong", "<login> "); got != "-ERR: Authentication failed\r\n<login> " {
				t.Fatalf("failure %d: %q", i, got)
			}
			continue
		}
		c.send("wrong")
		if got := c.until("\r\n"); got != "-ERR: Authentication failed\r\n" {
			t.Fatalf("last failure: %q", got)
		}
	}
	if !c.eof() {
		t.Fatal("connection open after maxAuthErrors failures")
	}
	// An unknown user fails the same way.
	c2 := dial(t, s)
	c2.until("<login> ")
	c2.do("USER nobody", "<password> ")
	if got := c2.do(adminPW, "<login> "); !strings.HasPrefix(got, "-ERR: ") {
		t.Errorf("unknown user: %q", got)
	}
}

// TestContextsPromptsAndCommit walks every context: each prompt is the
// path joined by '-', the account and contact info exist only after
// COMMIT, DONE saves into the parent, and COMMIT returns to the parent.
func TestContextsPromptsAndCommit(t *testing.T) {
	s := start(t, Options{})
	c := dial(t, s)
	c.login()
	steps := []struct{ line, prompt, status string }{
		{`UPDATE Domain name "example.com"`, "<domain#> ", "+OK: command successful"},
		{`ADD Account name "john" password "pw"`, "<domain-account#> ", "+OK: command successful"},
		{`CONFIG ContactInfo`, "<domain-account-contactInfo#> ", "+OK: command successful"},
		{`SET firstName "John"`, "<domain-account-contactInfo#> ", "+OK: command successful"},
		{`DONE`, "<domain-account#> ", "+OK: saving changes and switching back to previous context"},
		{`COMMIT`, "<domain#> ", "+OK: committing changes and switching back to previous context"},
		{`ADD Group name "team"`, "<domain-group#> ", "+OK: command successful"},
		{`COMMIT`, "<domain#> ", "+OK: committing changes and switching back to previous context"},
		{`UPDATE Group name "team"`, "<domain-group#> ", "+OK: command successful"},
		{`ADD Address "john@example.com"`, "<domain-group#> ", "+OK: command successful"},
		{`COMMIT`, "<domain#> ", "+OK: committing changes and switching back to previous context"},
		{`COMMIT`, "<#> ", "+OK: committing changes and switching back to previous context"},
	}
	for i, st := range steps {
		if i == 5 {
			if _, ok := s.Account(domain, "john"); ok {
				t.Fatal("account exists before COMMIT")
			}
		}
		if got := c.do(st.line, st.prompt); got != st.status+"\r\n"+st.prompt {
			t.Fatalf("%s: %q", st.line, got)
		}
	}
	a, ok := s.Account(domain, "john")
	if !ok || a.Password != "pw" || a.Contact["firstName"] != "John" || !a.Enabled {
		t.Errorf("account %+v %v", a, ok)
	}
	if g, ok := s.Group(domain, "team"); !ok || len(g.Members) != 1 {
		t.Errorf("group %+v %v", g, ok)
	}
}

// TestBackDiscards: BACK leaves a context without saving it.
func TestBackDiscards(t *testing.T) {
	s := start(t, Options{})
	s.PutAccount(domain, AccountState{Name: "john", Password: "pw", Contact: map[string]string{"firstName": "John"}})
	c := dial(t, s)
	c.login()
	c.do(`UPDATE Domain name "example.com"`, "<domain#> ")
	for _, l := range []string{`UPDATE Account name "john"`, `SET password "new"`, `CONFIG ContactInfo`, `SET firstName "X"`, `BACK`, `COMMIT`} {
		c.do(l, "#> ")
	}
	if a, _ := s.Account(domain, "john"); a.Contact["firstName"] != "John" || a.Password != "new" {
		t.Errorf("contact BACK then account COMMIT: %+v", a)
	}
	for _, l := range []string{`UPDATE Account name "john"`, `CONFIG ContactInfo`, `SET firstName "Y"`, `DONE`, `BACK`} {
		c.do(l, "#> ")
	}
	if a, _ := s.Account(domain, "john"); a.Contact["firstName"] != "John" {
		t.Errorf("DONE then account BACK saved: %+v", a)
	}
	c.do(`ADD Account name "jane" password "pw"`, "<domain-account#> ")
	c.do(`BACK`, "<domain#> ")
	if _, ok := s.Account(domain, "jane"); ok {
		t.Error("ADD then BACK created the account")
	}
	if got := c.do(`BACK`, "<#> "); got != "+OK: discarding changes and switching back to previous context\r\n<#> " {
		t.Errorf("BACK from the domain: %q", got)
	}
}

// TestQuotingForms: the escaped, single-quoted and double-quoted forms.
func TestQuotingForms(t *testing.T) {
	cases := []struct{ arg, want string }{
		{`John`, `John`},
		{`John\ \"Q\"\ O\'Neil`, `John "Q" O'Neil`},
		{`'a "b" \c'`, `a "b" \c`},
		{`"x \"y\" \\ z"`, `x "y" \ z`},
		{`"a\b"`, `a\b`},
		{`"日本 😀"`, `日本 😀`},
		{`""`, ``},
		{`"mixed"'-'forms`, `mixed-forms`},
	}
	for _, tc := range cases {
		words, err := SplitArgs("SET firstName " + tc.arg)
		if err != nil || len(words) != 3 || words[2] != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.arg, words, err, tc.want)
		}
	}
	for _, bad := range []string{`"open`, `'open`, `"esc\"`} {
		if _, err := SplitArgs("SET x " + bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	// And over the wire, with keywords in any case and "name" left out.
	s := start(t, Options{})
	c := dial(t, s)
	c.login()
	c.do(`update DOMAIN example.com`, "<domain#> ")
	c.do(`add account name John\ Smith PassWord 'p"w'`, "<domain-account#> ")
	c.do(`config contactinfo`, "<domain-account-contactInfo#> ")
	c.do(`set LASTNAME "O'Brien \"Jr\""`, "<domain-account-contactInfo#> ")
	c.do(`done`, "<domain-account#> ")
	c.do(`commit`, "<domain#> ")
	a, ok := s.Account(domain, "john smith")
	if !ok || a.Name != "John Smith" || a.Password != `p"w` || a.Contact["lastName"] != `O'Brien "Jr"` {
		t.Errorf("account %+v %v", a, ok)
	}
	if got := c.do(`SET firstName "unterminated`, "<domain#> "); !strings.HasPrefix(got, "-ERR: ") {
		t.Errorf("unterminated quote: %q", got)
	}
}

// TestShowAndListFormats checks the exact output shapes of docs/axigen-cli.md.
func TestShowAndListFormats(t *testing.T) {
	s := start(t, Options{})
	s.PutAccount(domain, AccountState{Name: "john", Contact: map[string]string{"firstName": `say "hi" \o/`}})
	s.PutAccount(domain, AccountState{Name: "jane"})
	s.SetAssociation(domain, "john", "uuid-1", "uid=john,dc=example,dc=com")
	c := dial(t, s)
	c.login()
	c.do(`UPDATE Domain name "example.com"`, "<domain#> ")
	want := "\r\nThe list of accounts:\r\n\r\nname\r\n----\r\njane\r\njohn\r\n\r\n+OK: command successful\r\n<domain#> "
	if got := c.do(`LIST Accounts`, "<domain#> "); got != want {
		t.Errorf("LIST Accounts:\n%q\nwant\n%q", got, want)
	}
	want = "\r\nThe list of accounts:\r\n\r\nname\r\n----\r\njohn\r\n\r\n+OK: command successful\r\n<domain#> "
	if got := c.do(`LIST Accounts "jo*"`, "<domain#> "); got != want {
		t.Errorf("LIST Accounts jo*: %q", got)
	}
	// A name without wildcards matches as the pattern does: whole, any case.
	if got := c.do(`LIST Accounts "JOHN"`, "<domain#> "); got != want {
		t.Errorf("LIST Accounts JOHN: %q", got)
	}
	want = "\r\nThe list of accounts:\r\n\r\nname\r\n----\r\n\r\n+OK: command successful\r\n<domain#> "
	for _, name := range []string{"jo", "johnny"} {
		if got := c.do(`LIST Accounts "`+name+`"`, "<domain#> "); got != want {
			t.Errorf("LIST Accounts %s: %q", name, got)
		}
	}
	c.do(`UPDATE Account name "john"`, "<domain-account#> ")
	want = "\r\nThe registry information:\r\nAccount name = john\r\nAssociated LDAP ID = uuid-1\r\nAssociated LDAP DN = uid=john,dc=example,dc=com\r\n\r\n+OK: command successful\r\n<domain-account#> "
	if got := c.do(`SHOW RegistryInformation`, "<domain-account#> "); got != want {
		t.Errorf("SHOW RegistryInformation: %q", got)
	}
	c.do(`CONFIG ContactInfo`, "<domain-account-contactInfo#> ")
	got := c.do(`SHOW`, "<domain-account-contactInfo#> ")
	if !strings.HasPrefix(got, "\r\nThe contact information:\r\nfirstName = \"say \\\"hi\\\" \\\\o/\"\r\nlastName = \"\"\r\n") ||
		!strings.HasSuffix(got, "\r\n\r\n+OK: command successful\r\n<domain-account-contactInfo#> ") {
		t.Errorf("SHOW contact info: %q", got)
	}
	if got := c.do(`SET noSuchField "x"`, "<domain-account-contactInfo#> "); !strings.HasPrefix(got, "-ERR: ") {
		t.Errorf("unknown field: %q", got)
	}
}

// TestDomainCommands: REMOVE acts at once; names are unique; group
// addresses are checked.
func TestDomainCommands(t *testing.T) {
	s := start(t, Options{})
	s.PutAccount(domain, AccountState{Name: "john"})
	s.PutGroup(domain, GroupState{Name: "team", Members: []string{"a@example.com"}})
	c := dial(t, s)
	c.login()
	c.do(`UPDATE Domain name "example.com"`, "<domain#> ")
	expectErr := func(line, prompt string) {
		t.Helper()
		if got := c.do(line, prompt); !strings.HasPrefix(got, "-ERR: ") {
			t.Errorf("%s: %q", line, got)
		}
	}
	expectErr(`ADD Account name "JOHN" password "x"`, "<domain#> ")
	expectErr(`UPDATE Account name "nobody"`, "<domain#> ")
	expectErr(`REMOVE Account name "nobody"`, "<domain#> ")
	expectErr(`ADD Account name "x"`, "<domain#> ")
	expectErr(`ADD Group name "Team"`, "<domain#> ")
	expectErr(`ADD Member "x"`, "<domain#> ")
	expectErr(`RENAME Account "john"`, "<domain#> ")
	c.do(`UPDATE Group name "team"`, "<domain-group#> ")
	expectErr(`ADD Address "A@example.com"`, "<domain-group#> ")
	expectErr(`REMOVE Address "b@example.com"`, "<domain-group#> ")
	c.do(`REMOVE Address "a@example.com"`, "<domain-group#> ")
	c.do(`ADD Address "b@example.com"`, "<domain-group#> ")
	want := "\r\nThe list of group addresses:\r\nb@example.com\r\n\r\n+OK: command successful\r\n<domain-group#> "
	if got := c.do(`LIST Addresses`, "<domain-group#> "); got != want {
		t.Errorf("LIST Addresses: %q", got)
	}
	c.do(`COMMIT`, "<domain#> ")
	c.do(`REMOVE Account name "john"`, "<domain#> ")
	if _, ok := s.Account(domain, "john"); ok {
		t.Error("REMOVE Account did not act at once")
	}
	c.do(`REMOVE Group name "team"`, "<domain#> ")
	if _, ok := s.Group(domain, "team"); ok {
		t.Error("REMOVE Group did not act at once")
	}
}

func TestFailMatchingAndDropAfter(t *testing.T) {
	s := start(t, Options{})
	c := dial(t, s)
	c.login()
	s.FailMatching(regexp.MustCompile(`(?i)^update domain`), "Access denied")
	if got := c.do(`UPDATE Domain name "example.com"`, "<#> "); got != "-ERR: Access denied\r\n<#> " {
		t.Fatalf("failed command: %q", got)
	}
	s.ClearFaults()
	c.do(`UPDATE Domain name "example.com"`, "<domain#> ")
	s.DropAfter(1)
	c.do(`LIST Accounts`, "<domain#> ")
	c.send(`LIST Groups`)
	if !c.eof() {
		t.Fatal("connection not dropped")
	}
	ev := s.Transcript(1).Events()
	if ev[len(ev)-1].Dir != Dropped {
		t.Errorf("transcript does not end with the drop: %+v", ev[len(ev)-1])
	}
	// The fault fired once: a new session works.
	c2 := dial(t, s)
	c2.login()
	c2.do(`UPDATE Domain name "example.com"`, "<domain#> ")
}

func TestLatency(t *testing.T) {
	s := start(t, Options{})
	c := dial(t, s)
	c.login()
	s.SetLatency(150 * time.Millisecond)
	begin := time.Now()
	c.do(`GET VERSION`, "<#> ")
	if d := time.Since(begin); d < 150*time.Millisecond {
		t.Errorf("answer after %v, latency 150ms", d)
	}
}

// TestDownUp: down refuses new connections and cuts existing ones; up
// listens again on the same address.
func TestDownUp(t *testing.T) {
	s := start(t, Options{})
	addr := s.Addr()
	c := dial(t, s)
	c.login()
	if err := s.SetDown(true); err != nil {
		t.Fatal(err)
	}
	if !c.eof() {
		t.Error("existing session not cut")
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Fatal("connection accepted while down")
	}
	if err := s.SetDown(false); err != nil {
		t.Fatal(err)
	}
	if s.Addr() != addr {
		t.Errorf("address changed: %s -> %s", addr, s.Addr())
	}
	c2 := dial(t, s)
	c2.login()
}

// TestTranscriptMasksPasswords: the masked transcript hides the login
// password and every password value; the raw one keeps the exact bytes.
func TestTranscriptMasksPasswords(t *testing.T) {
	s := start(t, Options{})
	s.PutAccount(domain, AccountState{Name: "john"})
	c := dial(t, s)
	c.login()
	c.do(`UPDATE Domain name "example.com"`, "<domain#> ")
	c.do(`ADD Account name "jane" password "jane-pw"`, "<domain-account#> ")
	c.do(`SET password 'other-pw'`, "<domain-account#> ")
	c.do(`COMMIT`, "<domain#> ")
	tr := s.Transcript(1)
	masked := tr.String()
	for _, secret := range []string{adminPW, "jane-pw", "other-pw"} {
		if strings.Contains(masked, secret) {
			t.Errorf("masked transcript shows %q:\n%s", secret, masked)
		}
		if !strings.Contains(tr.Bytes(), secret) {
			t.Errorf("raw transcript lacks %q", secret)
		}
	}
	for _, want := range []string{"<password> ***\r\n", `ADD Account name "jane" password ***`, "SET password ***\r\n"} {
		if !strings.Contains(masked, want) {
			t.Errorf("masked transcript lacks %q:\n%s", want, masked)
		}
	}
}

// TestRawLineBreakIsASecondCommand: the server is line based, so a line
// break inside a value ends the command and the rest runs as another one.
// This is what the client must never let happen.
func TestRawLineBreakIsASecondCommand(t *testing.T) {
	s := start(t, Options{})
	s.PutAccount(domain, AccountState{Name: "victim"})
	c := dial(t, s)
	c.login()
	c.do(`UPDATE Domain name "example.com"`, "<domain#> ")
	c.send("LIST Accounts \"x\nREMOVE Account name \"victim\"")
	c.until("<domain#> ")
	c.until("<domain#> ")
	if _, ok := s.Account(domain, "victim"); ok {
		t.Fatal("second command did not run")
	}
	cmds := s.Transcript(1).Commands()
	if cmds[len(cmds)-2] != `LIST Accounts "x` || cmds[len(cmds)-1] != `REMOVE Account name "victim"` {
		t.Errorf("commands %q", cmds)
	}
}

func TestCloseEndsSessions(t *testing.T) {
	s := New(Options{Admins: map[string]string{"admin": adminPW}, Domains: []string{domain}})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s)
	c.login()
	s.SetLatency(time.Hour) // Close must not wait for it
	c.send("GET VERSION")
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs")
	}
	if !c.eof() {
		t.Error("session open after Close")
	}
}

// TestStartContextEndsServer: when Start's context ends, the server stops
// and a later Close returns at once.
func TestStartContextEndsServer(t *testing.T) {
	s := New(Options{Admins: map[string]string{"admin": adminPW}, Domains: []string{domain}})
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s)
	c.login()
	cancel()
	if !c.eof() {
		t.Fatal("session open after the context ended")
	}
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs after the context ended")
	}
}
