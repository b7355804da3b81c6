//go:build !unix

package main

import "io"

// termWidth is unknown off Unix.
func termWidth(io.Writer) int { return 0 }
