package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/ldapgate/ldapgate/store"
)

// journalAPI is what `ldapgate journal` needs of a journal: the journal
// itself when the gateway is stopped, or the running gateway's admin
// endpoint, which holds the journal's lock.
type journalAPI interface {
	List(store.Filter) ([]*store.Record, error)
	Stats() (store.Stats, error)
	Get(seq uint64) (*store.Record, error)
	Retry(ctx context.Context, seq uint64) error
	Drop(ctx context.Context, seq uint64) error
}

// remoteJournal reaches a running gateway's journal through its admin
// socket in the data folder.
type remoteJournal struct {
	http *http.Client
}

func newRemoteJournal(dataDir string) (*remoteJournal, bool) {
	sock := adminSocket(dataDir)
	if _, err := os.Stat(sock); err != nil {
		return nil, false
	}
	return &remoteJournal{http: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}}, true
}

func (r *remoteJournal) call(ctx context.Context, method, path string, out any) error {
	return r.send(ctx, method, path, nil, out)
}

// send is call with a JSON request body (in; nil: none).
func (r *remoteJournal) send(ctx context.Context, method, path string, in, out any) error {
	var reqBody io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		reqBody = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://ldapgate"+path, reqBody)
	if err != nil {
		return err
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return fmt.Errorf("the running gateway's admin endpoint: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return err
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%s: %w", strings.TrimSpace(string(body)), store.ErrNotFound)
	case resp.StatusCode != http.StatusOK:
		return errors.New(strings.TrimSpace(string(body)))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}

func (r *remoteJournal) List(f store.Filter) ([]*store.Record, error) {
	q := url.Values{}
	for _, s := range f.States {
		q.Add("state", string(s))
	}
	if f.Limit > 0 {
		q.Set("limit", fmt.Sprint(f.Limit))
	}
	var recs []*store.Record
	err := r.call(context.Background(), http.MethodGet, "/journal/records?"+q.Encode(), &recs)
	return recs, err
}

func (r *remoteJournal) Stats() (store.Stats, error) {
	var st store.Stats
	err := r.call(context.Background(), http.MethodGet, "/journal/stats", &st)
	return st, err
}

func (r *remoteJournal) Get(seq uint64) (*store.Record, error) {
	var rec store.Record
	if err := r.call(context.Background(), http.MethodGet, fmt.Sprintf("/journal/records/%d", seq), &rec); err != nil {
		return nil, err
	}
	return &rec, nil
}

func (r *remoteJournal) Retry(ctx context.Context, seq uint64) error {
	return r.call(ctx, http.MethodPost, fmt.Sprintf("/journal/records/%d/retry", seq), nil)
}

func (r *remoteJournal) Drop(ctx context.Context, seq uint64) error {
	return r.call(ctx, http.MethodPost, fmt.Sprintf("/journal/records/%d/drop", seq), nil)
}
