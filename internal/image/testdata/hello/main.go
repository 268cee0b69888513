// Command hello is a tiny main package for image build tests.
package main

import "fmt"

func main() { fmt.Println("hello from tend") }
