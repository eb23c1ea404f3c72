# description: malloc at or above M_MMAP_THRESHOLD (128K) gets its own mmap; free unmaps it at once
boot mem=64M
spawn app
malloc small 64K
malloc big 128K
malloc huge 4M
touch huge 0 1M
free big
free huge
malloc again 1M
touch again
report maps
