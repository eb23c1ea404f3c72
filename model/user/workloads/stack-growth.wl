# description: the stack VMA grows down on faults up to RLIMIT_STACK (8M); beyond it the process gets SIGSEGV
boot mem=64M
spawn deep
stack 64K
stack 1M
stack 7M
report maps
stack 9M
