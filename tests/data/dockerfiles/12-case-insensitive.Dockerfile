from alpine as Builder
run echo lower
Copy a b
WorkDir /x
