# description: small mallocs come from the brk heap; freed chunks are reused; a big free trims the heap top
boot mem=64M
spawn app
repeat 64
malloc p$i 1K
touch p$i
end
repeat 32
free p$i
end
malloc q 16K
touch q
malloc big 100K
touch big
free big
report maps,free
