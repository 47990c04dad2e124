// Lints the sources directly (no type information, no build needed), so `npm run lint` works on a fresh checkout.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

export default tseslint.config(
  { ignores: ['dist/', 'build/', 'node_modules/', 'fuzz/', 'addon/', 'qemu/', 'docs/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      // Destructuring a field away beside ...rest is how an object is copied without it; the name is not a mistake.
      '@typescript-eslint/no-unused-vars': ['error', { ignoreRestSiblings: true }],
    },
  },
  {
    files: ['bin/**/*.js', 'scripts/**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: globals.node },
    rules: {
      // These are plain CommonJS run by node as is; require() is their only way to load a module.
      '@typescript-eslint/no-require-imports': 'off',
    },
  },
);
