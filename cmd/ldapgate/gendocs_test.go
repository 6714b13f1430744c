package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// gendocs writes a page per visible command holding each of its flags, a
// top page listing the commands, and completion scripts that name the binary.
func TestGenDocsWritesPagesAndCompletionFromTheDefinitions(t *testing.T) {
	dir := t.TempDir()
	hidden := &cli.Command{Name: "secret", Hidden: true}
	commands := []*cli.Command{serveCommand(), journalCommand(), checkConfigCommand(), hidden, genDocsCommand()}
	app := newApp(commands...)
	if err := app.Run([]string{"ldapgate", "gendocs", "--man-dir", filepath.Join(dir, "man"), "--completion-dir", filepath.Join(dir, "completion")}); err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	top := read("man/ldapgate.1")
	for _, cmd := range commands[:3] {
		page := read("man/ldapgate-" + cmd.Name + ".1")
		if !strings.Contains(page, ".TH ldapgate-"+cmd.Name+" 1") || !strings.Contains(page, ".SH SYNOPSIS\nldapgate "+cmd.Name+"\n") {
			t.Errorf("ldapgate-%s.1 lacks its title or synopsis:\n%.300s", cmd.Name, page)
		}
		for _, f := range cmd.Flags {
			if name := f.Names()[0]; !strings.Contains(page, "--"+name) {
				t.Errorf("ldapgate-%s.1 does not document --%s", cmd.Name, name)
			}
		}
		if !strings.Contains(top, ".SH "+cmd.Name) || !strings.Contains(top, `\fBldapgate-`+cmd.Name+`\fP(1)`) {
			t.Errorf("ldapgate.1 does not list %s or refer to its page", cmd.Name)
		}
	}
	if !strings.Contains(read("man/ldapgate-journal.1"), "retry") {
		t.Error("ldapgate-journal.1 does not describe its subcommands")
	}
	for _, name := range []string{"secret", "gendocs", "help"} {
		if _, err := os.Stat(filepath.Join(dir, "man", "ldapgate-"+name+".1")); err == nil || strings.Contains(top, ".SH "+name) {
			t.Errorf("the hidden or built-in command %s is documented", name)
		}
	}
	if bash := read("completion/ldapgate.bash"); !strings.Contains(bash, "complete -o bashdefault -o default -F _ldapgate_complete ldapgate") {
		t.Errorf("bash completion does not register for ldapgate:\n%s", bash)
	}
	if zsh := read("completion/_ldapgate"); !strings.HasPrefix(zsh, "#compdef ldapgate\n") {
		t.Errorf("zsh completion lacks its #compdef line:\n%s", zsh)
	}
}
