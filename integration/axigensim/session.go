package axigensim

import (
	"bufio"
	"cmp"
	"errors"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"time"
)

// maxLine bounds one command line; a longer one ends the session.
const maxLine = 64 << 10

// frame is one level of the context stack.
type frame struct {
	kind    string // "domain", "account", "contactInfo", "limits", "group"
	domain  *domainState
	account *accountDraft
	contact map[string]string // contactInfo draft
	// services is the limits draft: the account's services, nil when
	// inherited.
	services []string
	group    *groupDraft
	// settings is the domain context's draft of its own settings.
	settings map[string]string
}

// accountDraft is an account being edited: it reaches the domain on COMMIT.
type accountDraft struct {
	key   string // lower-case name it had when the context was entered; "" for ADD
	state AccountState
}

type groupDraft struct {
	key   string
	state GroupState
}

type session struct {
	srv  *Server
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	t    *Transcript

	loggedIn   bool
	awaitingPW bool
	user       string
	authErrors int
	errors     int  // -ERR answers to logged-in commands
	failed     bool // the command being answered got -ERR
	// change is what the command being answered changed (nil: nothing);
	// changeSeq orders it among every session's changes.
	change    *Change
	changeSeq uint64
	stack     []frame
	out       strings.Builder // answer being composed
}

func newSession(srv *Server, conn net.Conn, t *Transcript) *session {
	return &session{srv: srv, conn: conn, r: bufio.NewReaderSize(conn, 4096), w: bufio.NewWriter(conn), t: t}
}

// errClose ends the session after the answer is sent.
var errClose = errors.New("close session")

func (s *session) serve() {
	s.out.WriteString(bannerLine + "\r\n")
	s.out.WriteString(s.prompt())
	if s.flush() != nil {
		return
	}
	for {
		line, err := s.readLine()
		if err != nil {
			return
		}
		masked := s.mask(line.text)
		s.t.add(FromClient, line.raw, masked+line.raw[len(line.text):])
		cmd := Command{At: time.Now(), Label: s.t.Label, Session: s.t.ID, Context: s.contextName(), Line: masked}
		s.srv.log.Debug("axigen-sim command", "session", s.t.ID, "label", s.t.Label, "context", cmd.Context, "line", masked)
		drop, errText, failed := s.srv.faultFor(line.text)
		if drop {
			s.t.add(Dropped, "", "")
			s.srv.logCommand(cmd)
			s.srv.log.Debug("axigen-sim dropped connection", "session", s.t.ID)
			return
		}
		var res error
		loggedIn := s.loggedIn
		s.failed = false
		s.change = nil
		if failed {
			s.awaitingPW = false
			s.fail(errText)
		} else {
			res = s.handle(line.text)
		}
		// A real server closes the session after maxErrors wrong commands
		// (failed logins count towards maxAuthErrors instead).
		if s.failed && loggedIn && res == nil {
			if s.errors++; s.errors >= s.srv.opts.MaxErrors {
				res = errClose
			}
		}
		cmd.OK, cmd.Change = !s.failed, s.change
		s.srv.logCommand(cmd)
		if res == nil {
			s.out.WriteString(s.prompt())
		}
		if s.flush() != nil || res != nil {
			return
		}
	}
}

type rawLine struct {
	raw  string // as received, with its line ending
	text string // without the line ending
}

// readLine reads one line. A line ends at LF (CRLF or bare LF); that is all a
// line-based server knows, so a CR or LF inside a value ends the command.
func (s *session) readLine() (rawLine, error) {
	var b []byte
	for {
		chunk, err := s.r.ReadSlice('\n')
		b = append(b, chunk...)
		if len(b) > maxLine {
			return rawLine{}, errors.New("line too long")
		}
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) && len(b) > 0 {
			break // last line without an ending: still a command
		}
		return rawLine{}, err
	}
	raw := string(b)
	text := strings.TrimSuffix(raw, "\n")
	text = strings.TrimSuffix(text, "\r")
	return rawLine{raw: raw, text: text}, nil
}

func (s *session) flush() error {
	if !s.srv.wait() {
		return errClose
	}
	data := s.out.String()
	s.out.Reset()
	s.t.add(FromServer, data, data)
	if _, err := s.w.WriteString(data); err != nil {
		return err
	}
	return s.w.Flush()
}

func (s *session) prompt() string {
	switch {
	case s.awaitingPW:
		return "<" + contextPassword + "> "
	case !s.loggedIn:
		return "<" + contextLogin + "> "
	}
	path := make([]string, len(s.stack))
	for i, f := range s.stack {
		path[i] = f.kind
	}
	return prompt(path)
}

func (s *session) contextName() string {
	return strings.TrimSuffix(strings.TrimPrefix(s.prompt(), "<"), "> ")
}

func (s *session) ok(text string) { s.out.WriteString("+OK: " + text + "\r\n") }

func (s *session) fail(text string) {
	s.failed = true
	s.out.WriteString("-ERR: " + text + "\r\n")
}

// mask returns line with any password replaced by "***".
func (s *session) mask(line string) string {
	if s.awaitingPW {
		return "***"
	}
	toks, err := tokenize(line)
	if err != nil {
		// An unparsable line cannot be run; mask everything after a
		// password keyword to be safe.
		if i := strings.Index(strings.ToLower(line), "password"); i >= 0 {
			return line[:i+len("password")] + " ***"
		}
		return line
	}
	for i := 0; i+1 < len(toks); i++ {
		if toks[i].isKeyword("password") {
			return maskToken(line, toks[i+1])
		}
	}
	return line
}

// handle runs one command and writes its answer (not the prompt).
func (s *session) handle(line string) error {
	if s.awaitingPW {
		s.awaitingPW = false
		if pw, ok := s.srv.opts.Admins[s.user]; ok && pw == line {
			s.loggedIn = true
			s.ok(statusAuthOK)
			return nil
		}
		s.authErrors++
		s.fail(errAuthFailed)
		if s.authErrors >= s.srv.opts.MaxAuthErrors {
			return errClose
		}
		return nil
	}
	toks, err := tokenize(line)
	if err != nil {
		s.fail(errBadQuoting)
		return nil
	}
	if len(toks) == 0 {
		return nil // an empty line gets the prompt again
	}
	if toks[0].isKeyword("exit") || toks[0].isKeyword("quit") {
		s.ok(statusFarewell)
		return errClose
	}
	if len(toks) == 2 && toks[0].isKeyword("get") && toks[1].isKeyword("version") {
		s.out.WriteString(versionLine + "\r\n")
		s.ok(statusOK)
		return nil
	}
	if !s.loggedIn {
		s.login(toks)
		return nil
	}
	if len(s.stack) == 0 {
		s.root(toks)
		return nil
	}
	switch top := &s.stack[len(s.stack)-1]; top.kind {
	case "domain":
		s.inDomain(top, toks)
	case "account":
		s.inAccount(top, toks)
	case "contactInfo":
		s.inContact(top, toks)
	case contextLimits:
		s.inLimits(top, toks)
	case "group":
		s.inGroup(top, toks)
	}
	return nil
}

func (s *session) login(toks []token) {
	switch {
	case len(toks) == 2 && toks[0].isKeyword("user"):
		s.user = toks[1].text
		s.awaitingPW = true
		if okBeforePasswordPrompt {
			s.ok(statusUserOK)
		}
	case len(toks) == 3 && toks[0].isKeyword("set") && toks[1].isKeyword("quiet"):
		s.ok(statusOK)
	default:
		s.fail(errNotLoggedIn)
	}
}

// nameArg reads "[name] <value>" at toks[i:], returning the value and the
// index after it.
func nameArg(toks []token, i int) (string, int, bool) {
	if i+1 < len(toks) && toks[i].isKeyword("name") {
		return toks[i+1].text, i + 2, true
	}
	if i < len(toks) {
		return toks[i].text, i + 1, true
	}
	return "", i, false
}

// is reports whether toks start with the given keywords.
func is(toks []token, kws ...string) bool {
	if len(toks) < len(kws) {
		return false
	}
	for i, kw := range kws {
		if !toks[i].isKeyword(kw) {
			return false
		}
	}
	return true
}

func (s *session) push(f frame) { s.stack = append(s.stack, f) }
func (s *session) pop()         { s.stack = s.stack[:len(s.stack)-1] }

func (s *session) root(toks []token) {
	switch {
	case is(toks, "update", "domain"):
		name, n, ok := nameArg(toks, 2)
		if !ok || n != len(toks) {
			s.fail(errUnknownCmd)
			return
		}
		s.srv.mu.Lock()
		d := s.srv.domains[strings.ToLower(name)]
		s.srv.mu.Unlock()
		if d == nil {
			s.fail(errNoSuchDomain)
			return
		}
		s.push(frame{kind: "domain", domain: d})
		s.ok(statusOK)
	case is(toks, "list", "domains") && len(toks) <= 3:
		s.srv.mu.Lock()
		var names []string
		for _, d := range s.srv.domains {
			names = append(names, d.name)
		}
		s.srv.mu.Unlock()
		s.out.WriteString(listing(listTitleDomains, listHeaderName, filter(names, toks, 2)))
		s.ok(statusOK)
	default:
		s.fail(errUnknownCmd)
	}
}

// filter keeps the names matching the optional wildcard at toks[i], sorted.
func filter(names []string, toks []token, i int) []string {
	var out []string
	for _, n := range names {
		if i >= len(toks) || wildcard(strings.ToLower(toks[i].text), strings.ToLower(n)) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// listNames returns, sorted, the names of the items (keyed by lower-case
// name) that a LIST's optional filter at toks[i] matches. A filter without
// wildcards names one item, which is looked up rather than matched against
// every name: a domain of many accounts lists one as fast as Axigen does.
func listNames[T any](items map[string]*T, name func(*T) string, toks []token, i int) []string {
	if i < len(toks) && !strings.ContainsAny(toks[i].text, "*?") {
		if it, ok := items[strings.ToLower(toks[i].text)]; ok {
			return []string{name(it)}
		}
		return nil
	}
	names := make([]string, 0, len(items))
	for _, it := range items {
		names = append(names, name(it))
	}
	return filter(names, toks, i)
}

// wildcard matches '*' (any run) and '?' (one character).
func wildcard(pattern, s string) bool {
	p, str := []rune(pattern), []rune(s)
	var match func(i, j int) bool
	match = func(i, j int) bool {
		for i < len(p) {
			switch p[i] {
			case '*':
				for k := j; k <= len(str); k++ {
					if match(i+1, k) {
						return true
					}
				}
				return false
			case '?':
				if j >= len(str) {
					return false
				}
			default:
				if j >= len(str) || p[i] != str[j] {
					return false
				}
			}
			i++
			j++
		}
		return j == len(str)
	}
	return match(0, 0)
}

// oneName reads a command's only argument, a name at toks[2]; a command of
// another shape fails.
func (s *session) oneName(toks []token) (string, bool) {
	name, n, ok := nameArg(toks, 2)
	if !ok || n != len(toks) {
		s.fail(errUnknownCmd)
		return "", false
	}
	return name, true
}

// find returns a copy of the item of a domain (accounts or groups, keyed by
// lower-case name) named name, taken under the server's lock.
func find[T any](s *session, items map[string]*T, name string, clone func(*T) T) (T, bool) {
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	it := items[strings.ToLower(name)]
	if it == nil {
		var zero T
		return zero, false
	}
	return clone(it), true
}

// existing is find for a command that needs the item: it fails with
// notFound when there is none.
func existing[T any](s *session, items map[string]*T, name string, clone func(*T) T, notFound string) (T, bool) {
	c, ok := find(s, items, name, clone)
	if !ok {
		s.fail(notFound)
	}
	return c, ok
}

// removeItem deletes the named item (of kind "account" or "group") of
// domain d at once, or fails with notFound.
func removeItem[T any](s *session, d *domainState, kind string, items map[string]*T, name, notFound string) {
	s.srv.mu.Lock()
	_, exists := items[strings.ToLower(name)]
	delete(items, strings.ToLower(name))
	var seq uint64
	if exists {
		seq = s.srv.nextChangeLocked()
	}
	s.srv.mu.Unlock()
	if !exists {
		s.fail(notFound)
		return
	}
	s.change = &Change{Seq: seq, Domain: d.name, Kind: kind, Name: name, Removed: true}
	s.ok(statusOK)
}

func (s *session) inDomain(f *frame, toks []token) {
	d := f.domain
	switch {
	case is(toks, "add", "account"):
		name, n, ok := nameArg(toks, 2)
		if !ok || n+2 != len(toks) || !toks[n].isKeyword("password") {
			s.fail(errUnknownCmd)
			return
		}
		if name == "" || toks[n+1].text == "" {
			s.fail(errEmptyValue)
			return
		}
		if _, exists := find(s, d.accounts, name, (*AccountState).clone); exists {
			s.fail(errAccountExists)
			return
		}
		s.push(frame{kind: "account", domain: d, account: &accountDraft{
			state: AccountState{Name: name, Password: toks[n+1].text, Contact: map[string]string{}, Enabled: true},
		}})
		s.ok(statusOK)
	case is(toks, "update", "account"):
		if name, ok := s.oneName(toks); ok {
			if c, found := existing(s, d.accounts, name, (*AccountState).clone, errNoSuchAccount); found {
				s.push(frame{kind: "account", domain: d, account: &accountDraft{key: strings.ToLower(name), state: c}})
				s.ok(statusOK)
			}
		}
	case is(toks, "remove", "account"):
		if name, ok := s.oneName(toks); ok {
			removeItem(s, d, "account", d.accounts, name, errNoSuchAccount)
		}
	case is(toks, "show", "account"):
		if name, ok := s.oneName(toks); ok {
			if c, found := existing(s, d.accounts, name, (*AccountState).clone, errNoSuchAccount); found {
				s.out.WriteString(showing(showTitleAccount, accountFields(c)))
				s.ok(statusOK)
			}
		}
	case is(toks, "list", "accounts") && len(toks) <= 3:
		s.srv.mu.Lock()
		names := listNames(d.accounts, func(x *AccountState) string { return x.Name }, toks, 2)
		s.srv.mu.Unlock()
		s.out.WriteString(listing(listTitleAccounts, listHeaderName, names))
		s.ok(statusOK)
	case is(toks, "add", "group"):
		name, ok := s.oneName(toks)
		switch {
		case !ok:
		case name == "":
			s.fail(errEmptyValue)
		default:
			if _, exists := find(s, d.groups, name, (*GroupState).clone); exists {
				s.fail(errGroupExists)
				return
			}
			s.push(frame{kind: "group", domain: d, group: &groupDraft{state: GroupState{Name: name}}})
			s.ok(statusOK)
		}
	case is(toks, "update", "group"):
		if name, ok := s.oneName(toks); ok {
			if c, found := existing(s, d.groups, name, (*GroupState).clone, errNoSuchGroup); found {
				s.push(frame{kind: "group", domain: d, group: &groupDraft{key: strings.ToLower(name), state: c}})
				s.ok(statusOK)
			}
		}
	case is(toks, "remove", "group"):
		if name, ok := s.oneName(toks); ok {
			removeItem(s, d, "group", d.groups, name, errNoSuchGroup)
		}
	case is(toks, "show", "group"):
		if name, ok := s.oneName(toks); ok {
			if c, found := existing(s, d.groups, name, (*GroupState).clone, errNoSuchGroup); found {
				s.out.WriteString(showing(showTitleGroup, [][2]string{{"name", showValue(c.Name)}}))
				s.ok(statusOK)
			}
		}
	case is(toks, "list", "groups") && len(toks) <= 3:
		s.srv.mu.Lock()
		names := listNames(d.groups, func(x *GroupState) string { return x.Name }, toks, 2)
		s.srv.mu.Unlock()
		s.out.WriteString(listing(listTitleGroups, listHeaderName, names))
		s.ok(statusOK)
	case len(toks) == 3 && toks[0].isKeyword("set"):
		// A domain's own setting: kept in the context until COMMIT.
		if f.settings == nil {
			f.settings = map[string]string{}
		}
		f.settings[toks[1].text] = toks[2].text
		s.ok(statusOK)
	case len(toks) == 1 && toks[0].isKeyword("commit"):
		if len(f.settings) > 0 {
			s.srv.mu.Lock()
			if d.settings == nil {
				d.settings = map[string]string{}
			}
			maps.Copy(d.settings, f.settings)
			s.srv.mu.Unlock()
		}
		s.pop()
		s.ok(statusCommit)
	case len(toks) == 1 && toks[0].isKeyword("back"):
		s.pop()
		s.ok(statusBack)
	default:
		s.fail(errUnknownCmd)
	}
}

func accountFields(a AccountState) [][2]string {
	enabled := "yes"
	if !a.Enabled {
		enabled = "no"
	}
	return [][2]string{{"name", showValue(a.Name)}, {"enabled", enabled + " [default]"}}
}

func (s *session) inAccount(f *frame, toks []token) {
	a := f.account
	switch {
	case len(toks) == 3 && is(toks, "set", "name"):
		if nameFree(s, f.domain.accounts, a.key, toks[2].text, errAccountExists) {
			a.state.Name = toks[2].text
			s.ok(statusOK)
		}
	case len(toks) == 3 && is(toks, "set", "password"):
		if toks[2].text == "" {
			s.fail(errEmptyValue)
			return
		}
		a.state.Password = toks[2].text
		s.ok(statusOK)
	case len(toks) == 2 && is(toks, "config", "contactinfo"):
		c := make(map[string]string, len(a.state.Contact))
		for k, v := range a.state.Contact {
			c[k] = v
		}
		s.push(frame{kind: "contactInfo", domain: f.domain, contact: c})
		s.ok(statusOK)
	case len(toks) == 2 && is(toks, "config", "limits"):
		s.push(frame{kind: contextLimits, domain: f.domain, services: slices.Clone(a.state.Services)})
		s.ok(statusOK)
	case len(toks) == 2 && is(toks, "show", "registryinformation"):
		s.out.WriteString(showing(showTitleRegistry, [][2]string{
			{registryAccountName, a.state.Name},
			{registryLDAPID, cmp.Or(a.state.LDAPID, noLDAPID)},
			{registryLDAPDN, a.state.LDAPDN},
		}))
		s.ok(statusOK)
	case len(toks) == 1 && toks[0].isKeyword("show"):
		s.out.WriteString(showing(showTitleAccount, accountFields(a.state)))
		s.ok(statusOK)
	case len(toks) == 1 && toks[0].isKeyword("commit"):
		if err := s.commitAccount(f); err != "" {
			s.fail(err)
			return
		}
		s.pop()
		s.ok(statusCommit)
		saved := a.state.clone()
		s.change = &Change{Seq: s.changeSeq, Domain: f.domain.name, Kind: "account", Name: saved.Name, Account: &saved}
		s.srv.mu.Lock()
		hook := s.srv.onAccount
		s.srv.mu.Unlock()
		if hook != nil {
			hook(f.domain.name, a.state.clone())
		}
	case len(toks) == 1 && toks[0].isKeyword("back"):
		s.pop()
		s.ok(statusBack)
	default:
		s.fail(errUnknownCmd)
	}
}

// commitAccount saves an account draft; it returns an -ERR text on conflict.
func (s *session) commitAccount(f *frame) string {
	a := f.account
	// LDAP association is not the session's to change: keep the current
	// one (the connector may have set it meanwhile).
	keep := func(draft, cur *AccountState) { draft.LDAPID, draft.LDAPDN = cur.LDAPID, cur.LDAPDN }
	a.state.Enabled = servesLogins(a.state.Services)
	return commitDraft(s, f.domain.accounts, &a.key, &a.state, a.state.Name, (*AccountState).clone, keep, errAccountExists)
}

// nameFree reports whether a draft (read from key; "" for a new one) may
// take name: not empty, and no other item of the domain has it. Otherwise
// the command fails.
func nameFree[T any](s *session, items map[string]*T, key, name, errExists string) bool {
	if name == "" {
		s.fail(errEmptyValue)
		return false
	}
	s.srv.mu.Lock()
	_, taken := items[strings.ToLower(name)]
	s.srv.mu.Unlock()
	if taken && strings.ToLower(name) != key {
		s.fail(errExists)
		return false
	}
	return true
}

// commitDraft saves the draft of an item (an account or group) named name
// into items, replacing the one it was read from (*key; "" for a new one),
// and sets *key to its new key. keep, if set, carries over what the session
// may not change. It returns an -ERR text on conflict.
func commitDraft[T any](s *session, items map[string]*T, key *string, draft *T, name string, clone func(*T) T, keep func(draft, cur *T), errExists string) string {
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	newKey := strings.ToLower(name)
	if *key == "" {
		if _, exists := items[newKey]; exists {
			return errExists
		}
	} else {
		cur, exists := items[*key]
		if !exists {
			return errGone
		}
		if other, taken := items[newKey]; taken && other != cur {
			return errExists
		}
		if keep != nil {
			keep(draft, cur)
		}
		delete(items, *key)
	}
	c := clone(draft)
	items[newKey] = &c
	*key = newKey
	s.changeSeq = s.srv.nextChangeLocked()
	return ""
}

// inLimits handles an account's Limits context; of its settings only
// services is modelled.
func (s *session) inLimits(f *frame, toks []token) {
	switch {
	case len(toks) >= 3 && is(toks, "set", limitsServices):
		set, ok := parseServiceSet(toks[2:])
		if !ok {
			s.fail(errUnknownCmd)
			return
		}
		f.services = set
		s.ok(statusOK)
	case len(toks) == 2 && is(toks, "reset", limitsServices):
		f.services = nil
		s.ok(statusOK)
	case len(toks) == 1 && toks[0].isKeyword("show"):
		if f.services == nil {
			s.out.WriteString(showing(showTitleLimits, [][2]string{{limitsServices, serviceSet(loginServices) + " [" + inheritedNote + "]"}}))
		} else {
			s.out.WriteString(showing(showTitleLimits, [][2]string{{limitsServices, serviceSet(f.services)}}))
		}
		s.ok(statusOK)
	default:
		s.leaveSubContext(toks, func(a *AccountState) { a.Services = f.services })
	}
}

// leaveSubContext handles what an account's sub-context (ContactInfo,
// Limits) shares: DONE saves the draft into the account with save, BACK
// drops it; anything else is unknown.
func (s *session) leaveSubContext(toks []token, save func(*AccountState)) {
	switch {
	case len(toks) == 1 && toks[0].isKeyword("done"):
		s.pop()
		save(&s.stack[len(s.stack)-1].account.state)
		s.ok(statusDone)
	case len(toks) == 1 && toks[0].isKeyword("back"):
		s.pop()
		s.ok(statusBack)
	default:
		s.fail(errUnknownCmd)
	}
}

// parseServiceSet reads "(a b c)" split into words, or "()"; an empty set
// is not nil.
func parseServiceSet(toks []token) ([]string, bool) {
	words := make([]string, len(toks))
	for i, t := range toks {
		if t.quoted {
			return nil, false
		}
		words[i] = t.text
	}
	joined := strings.Join(words, " ")
	if !strings.HasPrefix(joined, "(") || !strings.HasSuffix(joined, ")") {
		return nil, false
	}
	return append([]string{}, strings.Fields(joined[1:len(joined)-1])...), true
}

func (s *session) inContact(f *frame, toks []token) {
	switch {
	case len(toks) == 3 && toks[0].isKeyword("set"):
		field := ""
		for _, name := range contactFields {
			if toks[1].isKeyword(name) {
				field = name
			}
		}
		if field == "" {
			s.fail(errNoSuchField)
			return
		}
		f.contact[field] = toks[2].text
		s.ok(statusOK)
	case len(toks) == 1 && toks[0].isKeyword("show"):
		fields := make([][2]string, len(contactFields))
		for i, name := range contactFields {
			fields[i] = [2]string{name, showValue(f.contact[name])}
		}
		s.out.WriteString(showing(showTitleContact, fields))
		s.ok(statusOK)
	default:
		s.leaveSubContext(toks, func(a *AccountState) { a.Contact = f.contact })
	}
}

func (s *session) inGroup(f *frame, toks []token) {
	g := f.group
	indexOf := func(addr string) int {
		return slices.IndexFunc(g.state.Members, func(m string) bool { return strings.EqualFold(m, addr) })
	}
	switch {
	case len(toks) == 3 && is(toks, "set", "name"):
		if nameFree(s, f.domain.groups, g.key, toks[2].text, errGroupExists) {
			g.state.Name = toks[2].text
			s.ok(statusOK)
		}
	case len(toks) == 3 && is(toks, "add", "address"):
		if toks[2].text == "" {
			s.fail(errEmptyValue)
			return
		}
		if indexOf(toks[2].text) >= 0 {
			s.fail(errAddrExists)
			return
		}
		g.state.Members = append(g.state.Members, toks[2].text)
		s.ok(statusOK)
	case len(toks) == 3 && is(toks, "remove", "address"):
		i := indexOf(toks[2].text)
		if i < 0 {
			s.fail(errNoSuchAddr)
			return
		}
		g.state.Members = slices.Delete(g.state.Members, i, i+1)
		s.ok(statusOK)
	case len(toks) == 2 && is(toks, "list", "addresses"):
		rows := append([]string(nil), g.state.Members...)
		slices.Sort(rows)
		s.out.WriteString(plainListing(listTitleAddrs, rows))
		s.ok(statusOK)
	case len(toks) == 1 && toks[0].isKeyword("show"):
		s.out.WriteString(showing(showTitleGroup, [][2]string{{"name", showValue(g.state.Name)}}))
		s.ok(statusOK)
	case len(toks) == 1 && toks[0].isKeyword("commit"):
		if err := s.commitGroup(f); err != "" {
			s.fail(err)
			return
		}
		s.pop()
		s.ok(statusCommit)
		saved := g.state.clone()
		s.change = &Change{Seq: s.changeSeq, Domain: f.domain.name, Kind: "group", Name: saved.Name, Group: &saved}
	case len(toks) == 1 && toks[0].isKeyword("back"):
		s.pop()
		s.ok(statusBack)
	default:
		s.fail(errUnknownCmd)
	}
}

func (s *session) commitGroup(f *frame) string {
	g := f.group
	return commitDraft(s, f.domain.groups, &g.key, &g.state, g.state.Name, (*GroupState).clone, nil, errGroupExists)
}
