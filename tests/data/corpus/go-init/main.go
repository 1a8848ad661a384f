package main

import (
	"fmt"
	"os"
	"runtime"
)

func main() {
	fmt.Printf("go %s/%s as %d\n", runtime.GOOS, runtime.GOARCH, os.Getuid())
}
