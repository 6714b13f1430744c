package store

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// keyBytes is the size of the AES-256 key.
const keyBytes = 32

// sealer encrypts secrets with AES-256-GCM. The record's sequence number is
// the associated data, so a ciphertext cannot be moved to another record.
type sealer struct {
	aead  cipher.AEAD
	check []byte // identifies the key without revealing it
}

// loadOrCreateKey reads the key file (64 hex digits), creating it with mode
// 0600 when it does not exist and create is true.
func loadOrCreateKey(path string, create bool) (*sealer, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		key := make([]byte, keyBytes)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("generate journal key: %w", err)
		}
		if err := writeKeyFile(path, key); err != nil {
			return nil, err
		}
		return newSealer(key)
	}
	if err != nil {
		return nil, fmt.Errorf("read journal key: %w", err)
	}
	key, err := hex.DecodeString(string(bytes.TrimSpace(data)))
	if err != nil || len(key) != keyBytes {
		return nil, fmt.Errorf("journal key %s: want %d hex digits", path, 2*keyBytes)
	}
	return newSealer(key)
}

func writeKeyFile(path string, key []byte) error {
	// O_EXCL: two processes starting at once must not both write a key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create journal key: %w", err)
	}
	_, werr := fmt.Fprintf(f, "%x\n", key)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(path)
		return fmt.Errorf("write journal key %s: %w", path, err)
	}
	return nil
}

func newSealer(key []byte) (*sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("journal key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("journal key: %w", err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("ldapgate journal key check"))
	return &sealer{aead: aead, check: mac.Sum(nil)}, nil
}

func secretAD(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte("ldapgate-secret:"), seq)
}

// seal returns nonce || ciphertext.
func (s *sealer) seal(seq uint64, plain []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("secret nonce: %w", err)
	}
	return s.aead.Seal(nonce, nonce, plain, secretAD(seq)), nil
}

func (s *sealer) open(seq uint64, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, fmt.Errorf("secret of record %d: ciphertext too short", seq)
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], secretAD(seq))
	if err != nil {
		return nil, fmt.Errorf("secret of record %d: %w", seq, err)
	}
	return plain, nil
}
