export function greet(name) {
  return `Hello, ${name}, from app-one`;
}
